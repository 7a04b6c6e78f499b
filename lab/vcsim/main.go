// Command vcsim runs govmomi's vCenter simulator for the palette-provision lab.
//
// Debian packages the simulator only as a library, so this small program wires it up: inventory counts from
// flags, credentials from the environment or a file (never argv), a fresh self-signed certificate per run
// (so thumbprint pinning is meaningful), an ESXi-style local datastore on a real directory, and a JSON
// "ready file" written once the server answers, from which the Python side learns URL, port and thumbprint.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vmware/govmomi"
	_ "github.com/vmware/govmomi/lookup/simulator"
	"github.com/vmware/govmomi/object"
	_ "github.com/vmware/govmomi/pbm/simulator"
	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/sts/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator"
	"github.com/vmware/govmomi/view"
)

func main() {
	listen := flag.String("l", "127.0.0.1:8989", "listen address (port 0 picks a free port)")
	username := flag.String("username", "user", "the only accepted user name")
	passwordFile := flag.String("password-file", "", "file holding the password (default: env VCSIM_PASSWORD)")
	m := simulator.VPX()
	flag.IntVar(&m.Datacenter, "dc", m.Datacenter, "datacenters")
	flag.IntVar(&m.Cluster, "cluster", m.Cluster, "clusters per datacenter")
	flag.IntVar(&m.ClusterHost, "host", m.ClusterHost, "hosts per cluster")
	flag.IntVar(&m.Host, "standalone-host", m.Host, "standalone hosts per datacenter")
	flag.IntVar(&m.Datastore, "ds", m.Datastore, "temporary LocalDS_N datastores")
	flag.IntVar(&m.Machine, "vm", m.Machine, "virtual machines per resource pool")
	flag.IntVar(&m.Portgroup, "pg", m.Portgroup, "distributed portgroups per datacenter")
	flag.BoolVar(&m.Autostart, "autostart", m.Autostart, "power on the model's virtual machines")
	delay := flag.Int("delay", 0, "milliseconds added to every SOAP method")
	dsName := flag.String("datastore-name", "datastore1", "name of the local datastore on -datastore-dir")
	dsDir := flag.String("datastore-dir", "", "directory backing an ESXi-style local datastore on every host")
	certFile := flag.String("cert-file", "", "write the server certificate (PEM) here")
	readyFile := flag.String("ready-file", "", "write a JSON description here once the server answers")
	flag.BoolVar(&simulator.Trace, "trace", false, "log SOAP traffic to stderr")
	flag.Parse()

	password, err := readPassword(*passwordFile)
	if err != nil {
		log.Fatal(err)
	}
	cert, err := selfSigned(*listen)
	if err != nil {
		log.Fatal(err)
	}
	if err = m.Create(); err != nil {
		log.Fatal(err)
	}
	m.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(*username, password)}
	m.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	m.Service.RegisterEndpoints = true
	s := m.Service.NewServer()

	if *dsDir != "" {
		if err = createDatastore(s.URL, *dsName, *dsDir); err != nil {
			log.Fatal(err)
		}
	}
	// The service keeps a pointer to m.DelayConfig: setting it only now keeps startup fast.
	m.DelayConfig.Delay = *delay

	sum := sha256.Sum256(cert.Certificate[0])
	info := map[string]interface{}{
		"url": (&url.URL{Scheme: "https", Host: s.URL.Host, Path: s.URL.Path}).String(), "port": s.Server.Listener.Addr().(*net.TCPAddr).Port,
		"thumbprint_sha256": colonHex(sum[:]), "datastore": *dsName, "datastore_dir": *dsDir, "pid": os.Getpid(),
	}
	if *certFile != "" {
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		if err = writeAtomic(*certFile, pemBytes); err != nil {
			log.Fatal(err)
		}
	}
	if *readyFile != "" {
		data, _ := json.Marshal(info)
		if err = writeAtomic(*readyFile, data); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("vcsim ready url=%s thumbprint=%s\n", info["url"], info["thumbprint_sha256"])

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	m.Remove() // removes only the model's temporary LocalDS_N directories, never -datastore-dir
	s.Close()
}

// readPassword takes the password from a file or VCSIM_PASSWORD: secrets never travel on a command line.
func readPassword(file string) (string, error) {
	if file != "" {
		b, err := os.ReadFile(file)
		return strings.TrimRight(string(b), "\r\n"), err
	}
	if p := os.Getenv("VCSIM_PASSWORD"); p != "" {
		return p, nil
	}
	return "", fmt.Errorf("no password: set VCSIM_PASSWORD or -password-file (an unset password lets any login in)")
}

// selfSigned makes a fresh ECDSA certificate valid for loopback and the listen host.
func selfSigned(listen string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "vcsim.pplab"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
		DNSNames: []string{"localhost", "vcsim.pplab"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if host, _, _ := net.SplitHostPort(listen); net.ParseIP(host) != nil && !net.ParseIP(host).IsUnspecified() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(host))
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &key.PublicKey, key)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, err
}

// createDatastore mounts dir as a local datastore on every host, through the SOAP API like an ESXi admin would.
func createDatastore(u *url.URL, name, dir string) error {
	ctx := context.Background()
	c, err := govmomi.NewClient(ctx, u, true)
	if err != nil {
		return err
	}
	defer func() { _ = c.Logout(ctx) }()
	v, err := view.NewManager(c.Client).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"HostSystem"}, true)
	if err != nil {
		return err
	}
	refs, err := v.Find(ctx, []string{"HostSystem"}, nil)
	if err != nil {
		return err
	}
	for _, ref := range refs {
		dss, err := object.NewHostSystem(c.Client, ref).ConfigManager().DatastoreSystem(ctx)
		if err != nil {
			return err
		}
		if _, err = dss.CreateLocalDatastore(ctx, name, dir); err != nil {
			return fmt.Errorf("datastore %s on %s: %w", name, ref.Value, err)
		}
	}
	return nil
}

func colonHex(b []byte) string {
	parts := make([]string, len(b))
	for i, x := range b {
		parts[i] = fmt.Sprintf("%02X", x)
	}
	return strings.Join(parts, ":")
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
