// pplab-agent: the YAML half of the lab's stand-in Palette appliance.
//
// The appliance's /init is a busybox shell script; parsing the seed's YAML in
// shell would be fragile, so this small static program does the two steps that
// need structure:
//
//	pplab-agent plan  --user-data F [--meta-data F] --out DIR
//	    read the NoCloud seed (docs/seed-format.md) and write the "installed
//	    configuration" into DIR as plain files the shell can use.
//	pplab-agent apply --state DIR [--root /]
//	    at boot from disk, turn DIR into /etc/passwd, /etc/group, /etc/shadow,
//	    home directories with authorized_keys, /etc/hostname and the files from
//	    stages.*[].files.
//
// The commands of the network stages (stages.network.before, network,
// network.after) go into network.sh, which /init runs with sh once the
// network is up at boot from disk, as Kairos runs them: the seed's address
// report (DHCP nodes) is the command they exist for.
//
// Unknown keys are ignored on purpose: users extend the seed through
// user_data_extra and a real Kairos installer ignores what it does not know.
//
// Built with Debian's golang-go + golang-gopkg-yaml.v3-dev in GOPATH mode
// (no go.mod, no network): GO111MODULE=off GOPATH=/usr/share/gocode CGO_ENABLED=0.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

var userNameRe = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

func logf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "pplab-agent: "+format+"\n", args...)
}

// lookup walks mapping keys; a missing key or a non-mapping yields nil.
func lookup(n *yaml.Node, path ...string) *yaml.Node {
	if n != nil && n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		n = n.Content[0]
	}
	for _, key := range path {
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
			}
		}
		n = next
	}
	return n
}

func scalar(n *yaml.Node) string {
	if n == nil || n.Kind != yaml.ScalarNode {
		return ""
	}
	return n.Value
}

func boolOf(n *yaml.Node, def bool) bool {
	v := strings.ToLower(scalar(n))
	switch v {
	case "true", "yes", "on", "1":
		return true
	case "false", "no", "off", "0":
		return false
	}
	return def
}

func stringList(n *yaml.Node) []string {
	var out []string
	if n == nil {
		return out
	}
	if n.Kind == yaml.ScalarNode {
		if n.Value != "" {
			out = append(out, n.Value)
		}
		return out
	}
	if n.Kind == yaml.SequenceNode {
		for _, c := range n.Content {
			if s := scalar(c); s != "" {
				out = append(out, s)
			}
		}
	}
	return out
}

// shellQuote makes a value safe to `. config.env` from busybox sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// maskToPrefix accepts a prefix length ("24") or a dotted mask ("255.255.255.0").
func maskToPrefix(m string) (string, error) {
	if m == "" {
		return "", errors.New("mask missing")
	}
	if p, err := strconv.Atoi(m); err == nil {
		if p < 0 || p > 32 {
			return "", fmt.Errorf("prefix length %d out of range", p)
		}
		return strconv.Itoa(p), nil
	}
	ip := net.ParseIP(m).To4()
	if ip == nil {
		return "", fmt.Errorf("mask %q is neither a prefix length nor a dotted mask", m)
	}
	ones, bits := net.IPv4Mask(ip[0], ip[1], ip[2], ip[3]).Size()
	if bits == 0 {
		return "", fmt.Errorf("mask %q is not contiguous", m)
	}
	return strconv.Itoa(ones), nil
}

// parseMode accepts the decimal integer the library writes (384 = 0o600) and,
// as Kairos also does, an octal string such as "0600".
func parseMode(n *yaml.Node, def os.FileMode) (os.FileMode, error) {
	s := scalar(n)
	if s == "" {
		return def, nil
	}
	base := 10
	if len(s) > 1 && s[0] == '0' {
		base = 8
		s = strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0")
	}
	v, err := strconv.ParseUint(s, base, 32)
	if err != nil {
		return 0, fmt.Errorf("permissions %q: %v", scalar(n), err)
	}
	return os.FileMode(v) & 07777, nil
}

type user struct {
	name   string
	passwd string
	groups []string
	keys   []string
}

type file struct {
	path    string
	content string
	mode    os.FileMode
	owner   int
	group   int
}

func plan(userData, metaData, out string) error {
	raw, err := os.ReadFile(userData)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(raw), "#cloud-config") {
		// A real Kairos ignores such a file; say so loudly, then carry on so the
		// test shows what was parsed.
		logf("WARNING: user-data does not start with #cloud-config")
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("user-data is not valid YAML: %v", err)
	}
	var meta yaml.Node
	if metaData != "" {
		if mraw, err := os.ReadFile(metaData); err == nil {
			if err := yaml.Unmarshal(mraw, &meta); err != nil {
				logf("WARNING: meta-data is not valid YAML: %v", err)
			}
		}
	}

	env := map[string]string{}
	order := []string{}
	set := func(k, v string) {
		if _, ok := env[k]; !ok {
			order = append(order, k)
		}
		env[k] = v
	}

	// As the Edge installer reference says: the host (and cluster node) name is
	// stylus.site.hostName, else stylus.site.name, else a generated edge-<id>.
	// The top-level cloud-init "hostname" is ignored on purpose, so a seed that
	// sets only that would show up in the lab with the wrong name.
	hostname := scalar(lookup(&doc, "stylus", "site", "hostName"))
	if hostname == "" {
		hostname = scalar(lookup(&doc, "stylus", "site", "name"))
	}
	if hostname == "" {
		hostname = "edge-" + strings.ReplaceAll(scalar(lookup(&meta, "instance-id")), "/", "-")
	}
	set("HOSTNAME", hostname)
	set("INSTANCE_ID", scalar(lookup(&meta, "instance-id")))
	set("INSTALL_AUTO", strconv.FormatBool(boolOf(lookup(&doc, "install", "auto"), false)))
	dev := scalar(lookup(&doc, "install", "device"))
	if dev == "" {
		dev = "auto"
	}
	set("INSTALL_DEVICE", dev)
	set("INSTALL_POWEROFF", strconv.FormatBool(boolOf(lookup(&doc, "install", "poweroff"), false)))
	set("INSTALL_REBOOT", strconv.FormatBool(boolOf(lookup(&doc, "install", "reboot"), false)))
	set("LOCALUI_PORT", scalar(lookup(&doc, "stylus", "localUI", "port")))

	// Network: the first entry of stylus.site.network.interfaces, in document
	// order (yaml.Node keeps it; a Go map would not).
	set("NET_TYPE", "dhcp")
	ifaces := lookup(&doc, "stylus", "site", "network", "interfaces")
	if ifaces != nil && ifaces.Kind == yaml.MappingNode && len(ifaces.Content) >= 2 {
		name, cfg := ifaces.Content[0].Value, ifaces.Content[1]
		set("NET_SEED_IFACE", name)
		typ := strings.ToLower(scalar(lookup(cfg, "type")))
		if typ == "" {
			typ = "dhcp"
		}
		switch typ {
		case "dhcp":
		case "static":
			// The published examples write the prefix in ipAddress
			// ("10.0.10.25/24"); a separate mask (a String in the reference) is
			// accepted too.
			addr := scalar(lookup(cfg, "ipAddress"))
			var prefix string
			if ip, ipnet, err := net.ParseCIDR(addr); err == nil && ip.To4() != nil {
				ones, _ := ipnet.Mask.Size()
				addr, prefix = ip.String(), strconv.Itoa(ones)
			} else {
				if net.ParseIP(addr).To4() == nil {
					return fmt.Errorf("interface %s: ipAddress %q is not an IPv4 address", name, addr)
				}
				p, err := maskToPrefix(scalar(lookup(cfg, "mask")))
				if err != nil {
					return fmt.Errorf("interface %s: %v", name, err)
				}
				prefix = p
			}
			gw := scalar(lookup(cfg, "gateway"))
			if gw != "" && net.ParseIP(gw).To4() == nil {
				return fmt.Errorf("interface %s: gateway %q is not an IPv4 address", name, gw)
			}
			set("NET_TYPE", "static")
			set("NET_ADDRESS", addr)
			set("NET_PREFIX", prefix)
			set("NET_GATEWAY", gw)
			ns := stringList(lookup(cfg, "nameserver"))
			set("NET_NAMESERVERS", strings.Join(ns, " "))
		default:
			return fmt.Errorf("interface %s: unknown type %q", name, typ)
		}
	}

	// Users and files from every stage (Kairos runs stages by name; the lab
	// applies all of them at boot from disk).
	var users []user
	var files []file
	var network []string
	stages := lookup(&doc, "stages")
	if stages != nil && stages.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(stages.Content); i += 2 {
			stageName := stages.Content[i].Value
			steps := stages.Content[i+1]
			if steps.Kind != yaml.SequenceNode {
				continue
			}
			for _, step := range steps.Content {
				if stageName == "network.before" || stageName == "network" || stageName == "network.after" {
					network = append(network, stringList(lookup(step, "commands"))...)
				}
				if us := lookup(step, "users"); us != nil && us.Kind == yaml.MappingNode {
					for j := 0; j+1 < len(us.Content); j += 2 {
						name := us.Content[j].Value
						if !userNameRe.MatchString(name) {
							return fmt.Errorf("user name %q is not a valid account name", name)
						}
						u := us.Content[j+1]
						users = append(users, user{
							name:   name,
							passwd: scalar(lookup(u, "passwd")),
							groups: stringList(lookup(u, "groups")),
							keys:   stringList(lookup(u, "ssh_authorized_keys")),
						})
					}
				}
				if fs := lookup(step, "files"); fs != nil && fs.Kind == yaml.SequenceNode {
					for _, f := range fs.Content {
						p := scalar(lookup(f, "path"))
						if !filepath.IsAbs(p) {
							return fmt.Errorf("file path %q is not absolute", p)
						}
						mode, err := parseMode(lookup(f, "permissions"), 0644)
						if err != nil {
							return fmt.Errorf("file %s: %v", p, err)
						}
						owner, _ := strconv.Atoi(scalar(lookup(f, "owner")))
						group, _ := strconv.Atoi(scalar(lookup(f, "group")))
						files = append(files, file{p, scalar(lookup(f, "content")), mode, owner, group})
					}
				}
			}
		}
	}
	account := ""
	if len(users) > 0 {
		account = users[0].name
	}
	set("ACCOUNT", account)

	if err := os.MkdirAll(filepath.Join(out, "keys"), 0700); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(out, "files"), 0700); err != nil {
		return err
	}
	var b strings.Builder
	for _, k := range order {
		fmt.Fprintf(&b, "%s=%s\n", k, shellQuote(env[k]))
	}
	if err := os.WriteFile(filepath.Join(out, "config.env"), []byte(b.String()), 0600); err != nil {
		return err
	}
	b.Reset()
	for _, u := range users {
		// name<TAB>hash<TAB>groups: none of them can hold a tab or newline
		// (names are validated, hashes are crypt strings).
		if strings.ContainsAny(u.passwd, "\t\n:") {
			return fmt.Errorf("user %s: passwd hash has an invalid character", u.name)
		}
		fmt.Fprintf(&b, "%s\t%s\t%s\n", u.name, u.passwd, strings.Join(u.groups, ","))
		keys := strings.Join(u.keys, "\n")
		if keys != "" {
			keys += "\n"
		}
		if err := os.WriteFile(filepath.Join(out, "keys", u.name), []byte(keys), 0600); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(out, "users"), []byte(b.String()), 0600); err != nil {
		return err
	}
	b.Reset()
	for i, f := range files {
		if err := os.WriteFile(filepath.Join(out, "files", strconv.Itoa(i)), []byte(f.content), 0600); err != nil {
			return err
		}
		fmt.Fprintf(&b, "%d\t%o\t%d\t%d\t%s\n", i, f.mode, f.owner, f.group, f.path)
	}
	if err := os.WriteFile(filepath.Join(out, "files.list"), []byte(b.String()), 0600); err != nil {
		return err
	}
	script := ""
	for _, c := range network {
		script += c + "\n"
	}
	if err := os.WriteFile(filepath.Join(out, "network.sh"), []byte(script), 0600); err != nil {
		return err
	}
	logf("plan: %d network stage command(s)", len(network))
	logf("plan: hostname=%s account=%s users=%d files=%d net=%s %s/%s gw=%s device=%s poweroff=%s reboot=%s",
		hostname, account, len(users), len(files), env["NET_TYPE"], env["NET_ADDRESS"], env["NET_PREFIX"],
		env["NET_GATEWAY"], dev, env["INSTALL_POWEROFF"], env["INSTALL_REBOOT"])
	return nil
}

func readLines(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if sc.Text() != "" {
			lines = append(lines, sc.Text())
		}
	}
	return lines, sc.Err()
}

func apply(state, root string) error {
	r := func(p string) string { return filepath.Join(root, p) }
	for _, d := range []string{"/etc", "/home", "/root"} {
		if err := os.MkdirAll(r(d), 0755); err != nil {
			return err
		}
	}
	lines, err := readLines(filepath.Join(state, "users"))
	if err != nil {
		return err
	}
	passwd := "root:x:0:0:root:/root:/bin/sh\n"
	shadow := "root:!:19000:0:99999:7:::\n"
	groupMembers := map[string][]string{}
	groupOrder := []string{}
	for i, line := range lines {
		parts := strings.SplitN(line, "\t", 3)
		for len(parts) < 3 {
			parts = append(parts, "")
		}
		name, hash, groups := parts[0], parts[1], parts[2]
		uid := 1000 + i
		home := "/home/" + name
		passwd += fmt.Sprintf("%s:x:%d:%d::%s:/bin/sh\n", name, uid, uid, home)
		if hash == "" {
			hash = "!"
		}
		shadow += fmt.Sprintf("%s:%s:19000:0:99999:7:::\n", name, hash)
		groupOrder = append(groupOrder, name)
		groupMembers[name] = nil
		for _, g := range strings.Split(groups, ",") {
			if g == "" || !userNameRe.MatchString(g) {
				continue
			}
			if _, ok := groupMembers[g]; !ok {
				groupOrder = append(groupOrder, g)
			}
			groupMembers[g] = append(groupMembers[g], name)
		}
		// dropbear refuses authorized_keys under a group/world-writable path
		// (checkpubkeyperms), so the modes matter.
		sshDir := r(home + "/.ssh")
		if err := os.MkdirAll(sshDir, 0700); err != nil {
			return err
		}
		keys, err := os.ReadFile(filepath.Join(state, "keys", name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(sshDir+"/authorized_keys", keys, 0600); err != nil {
			return err
		}
		for _, p := range []string{r(home), sshDir, sshDir + "/authorized_keys"} {
			if err := os.Chown(p, uid, uid); err != nil {
				return err
			}
		}
		if err := os.Chmod(r(home), 0755); err != nil {
			return err
		}
	}
	group := "root:x:0:\n"
	userIDs := map[string]int{}
	for i, line := range lines {
		userIDs[strings.SplitN(line, "\t", 2)[0]] = 1000 + i
	}
	nextGid := 2000
	for _, g := range groupOrder {
		id, isUser := userIDs[g]
		if !isUser {
			id = nextGid
			nextGid++
		}
		group += fmt.Sprintf("%s:x:%d:%s\n", g, id, strings.Join(groupMembers[g], ","))
	}
	for p, c := range map[string]string{"/etc/passwd": passwd, "/etc/group": group} {
		if err := os.WriteFile(r(p), []byte(c), 0644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(r("/etc/shadow"), []byte(shadow), 0600); err != nil {
		return err
	}

	flines, err := readLines(filepath.Join(state, "files.list"))
	if err != nil {
		return err
	}
	for _, line := range flines {
		parts := strings.SplitN(line, "\t", 5)
		if len(parts) != 5 {
			return fmt.Errorf("files.list: bad line %q", line)
		}
		mode, _ := strconv.ParseUint(parts[1], 8, 32)
		owner, _ := strconv.Atoi(parts[2])
		grp, _ := strconv.Atoi(parts[3])
		content, err := os.ReadFile(filepath.Join(state, "files", parts[0]))
		if err != nil {
			return err
		}
		dst := r(parts[4])
		if err := os.MkdirAll(filepath.Dir(dst), 0755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, content, os.FileMode(mode)); err != nil {
			return err
		}
		// WriteFile honours the umask and keeps an existing file's mode.
		if err := os.Chmod(dst, os.FileMode(mode)); err != nil {
			return err
		}
		if err := os.Chown(dst, owner, grp); err != nil {
			return err
		}
		logf("apply: wrote %s (mode %04o)", parts[4], mode)
	}
	return nil
}

func main() {
	if len(os.Args) < 2 {
		logf("usage: pplab-agent plan|apply ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	userData := fs.String("user-data", "", "seed user-data")
	metaData := fs.String("meta-data", "", "seed meta-data")
	out := fs.String("out", "", "state directory to write")
	state := fs.String("state", "", "state directory to apply")
	root := fs.String("root", "/", "root to apply into")
	_ = fs.Parse(os.Args[2:])
	var err error
	switch os.Args[1] {
	case "plan":
		if *userData == "" || *out == "" {
			logf("plan needs --user-data and --out")
			os.Exit(2)
		}
		err = plan(*userData, *metaData, *out)
	case "apply":
		if *state == "" {
			logf("apply needs --state")
			os.Exit(2)
		}
		err = apply(*state, *root)
	default:
		logf("unknown command %q", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		logf("ERROR: %v", err)
		os.Exit(1)
	}
}
