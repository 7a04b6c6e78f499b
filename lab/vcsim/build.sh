#!/bin/sh
# Build lab/build/vcsim from Debian's govmomi source (golang-github-vmware-govmomi-dev) plus our one fix.
#
# Debian ships the simulator only as a Go library, and its PropertyCollector.Fetch crashes on unset
# properties (see fetch-unset-property.patch), so we build from a patched private copy of the source in
# GOPATH mode (no go.mod, no module downloads: this machine is offline). Idempotent: rebuilds only when
# main.go, the patch, the govmomi package or the Go toolchain changed.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build="$root/lab/build"
gopath="$build/gopath"
src=/usr/share/gocode/src/github.com/vmware/govmomi
out="$build/vcsim"
stamp="$build/vcsim.stamp"

# One build at a time (test workers start vcsim in parallel): the others wait, then find it up to date.
mkdir -p "$build"
exec 9>"$build/vcsim.lock"
flock 9

for tool in go patch sha256sum dpkg-query; do
    command -v "$tool" >/dev/null 2>&1 || { echo "build.sh: '$tool' not found (apt-get install golang-go patch)" >&2; exit 1; }
done
[ -d "$src/simulator" ] || { echo "build.sh: $src missing (apt-get install golang-github-vmware-govmomi-dev)" >&2; exit 1; }

want=$( {
    cat "$here/main.go" "$here/fetch-unset-property.patch" "$here/build.sh"
    dpkg-query -W -f='${Version}\n' golang-github-vmware-govmomi-dev golang-github-google-uuid-dev
    go version
} | sha256sum | cut -d' ' -f1)

if [ -x "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "vcsim up to date: $out"
    exit 0
fi

# Fresh copy each time the inputs change: a half-patched tree must never survive a failed run.
rm -rf "$gopath"
mkdir -p "$gopath/src/github.com/vmware"
cp -rL "$src" "$gopath/src/github.com/vmware/govmomi"
patch -s -d "$gopath/src/github.com/vmware/govmomi" -p1 < "$here/fetch-unset-property.patch"

# Our copy first in GOPATH so it shadows Debian's; Debian's tree supplies the other dependencies.
cd "$here"
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOCACHE="$build/go-cache" GOPROXY=off GOFLAGS= \
    go build -trimpath -o "$out.tmp" .
mv "$out.tmp" "$out"
echo "$want" > "$stamp"
echo "built $out"
