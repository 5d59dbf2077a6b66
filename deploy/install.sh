#!/bin/sh
# Installs a Vantage agent or coordinator on a Debian/Ubuntu host (any systemd Linux): the binary
# in /usr/local/bin, the `vantage` system user, the settings in /etc/vantage/<component>.env, the
# certificates in /etc/vantage/pki (keys mode 0600, owned by vantage), the hardened unit from
# deploy/systemd/, and `systemctl enable --now`. Run it again with the same flags and nothing
# changes; an existing key or token that differs is never replaced without --force.
#
#   install.sh agent --from DIR | --url URL [--sha256 HEX] \
#       --coordinator https://HOST:7700 --cert agent.pem --key agent.key --ca ca.pem
#   install.sh coordinator --from DIR | --url URL [--sha256 HEX] \
#       --cert coordinator.pem --key coordinator.key --ca ca.pem \
#       [--config vantage.toml] [--admin-token-file FILE] [--read-token-file FILE] \
#       [--listen 0.0.0.0:7700] [--http-listen 127.0.0.1:7701] [--retention 7d]
#
# Run it twice (once per component) to put both on one host. Options:
#   --from DIR            the directory holding the built binary (vantage-agent, vantage-coordinator)
#   --url URL             a release tarball (.tar.gz) holding the binary anywhere inside; fetched
#                         with curl or wget (file:// works with curl)
#   --sha256 HEX          the tarball's SHA-256: refused if it differs (required but for file://)
#   --coordinator URL     agent: the coordinator's gRPC URL (VANTAGE_COORDINATOR)
#   --cert/--key PEM      the component's certificate and key (`vantage-coordinator pki init` makes
#                         the coordinator's, `pki issue-agent` an agent's); copied to
#                         /etc/vantage/pki/<component>.pem and .key
#   --ca PEM              the CA (ca.pem): the agent checks the coordinator with it
#                         (VANTAGE_COORDINATOR_CA), the coordinator its clients (VANTAGE_CLIENT_CA)
#   --config FILE         coordinator: copied to /etc/vantage/vantage.toml (default: keep the one
#                         there, or write an empty one: targets can come from the API)
#   --admin-token-file F  coordinator: copied to /etc/vantage/admin.token (default: keep the one
#                         there, or make a random one)
#   --read-token-file F   coordinator: copied to /etc/vantage/read.token (optional)
#   --listen, --http-listen, --retention
#                         coordinator: VANTAGE_LISTEN (default 0.0.0.0:7700), VANTAGE_HTTP_LISTEN
#                         (default 127.0.0.1:7701), VANTAGE_RETENTION (default: the coordinator's)
#   --unit FILE           the systemd unit to install (default: systemd/vantage-<component>.service
#                         beside this script, or inside the tarball)
#   --root DIR            install into DIR as a staging root (an image being built, a test): no
#                         service is started, the user is created with `useradd --prefix DIR` only
#                         if DIR/etc/passwd exists, the unit is enabled with `systemctl --root DIR`
#   --no-start            install and enable nothing at boot: no `systemctl enable --now`
#   --force               replace an existing key or token that differs
#   -h, --help            this text
set -eu

die() {
    echo "install.sh: $*" >&2
    exit 1
}
usage() {
    echo "install.sh: $*" >&2
    echo "usage: install.sh agent|coordinator --from DIR|--url URL [options]; see install.sh --help" >&2
    exit 2
}
say() { echo "install.sh: $*"; }

component="" from="" url="" sha256="" coordinator="" cert="" key="" ca="" config="" admin_token=""
read_token="" listen="0.0.0.0:7700" http_listen="127.0.0.1:7701" retention="" unit="" root=""
start=yes force=no

while [ $# -gt 0 ]; do
    case "$1" in
    agent | coordinator)
        [ -z "$component" ] || usage "one component per run (run install.sh again for the other)"
        component=$1
        shift
        continue
        ;;
    -h | --help)
        sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    --no-start) start=no; shift; continue ;;
    --force) force=yes; shift; continue ;;
    --*=*)
        option=${1%%=*} value=${1#*=}
        shift
        set -- "$option" "$value" "$@"
        continue
        ;;
    --*) [ $# -ge 2 ] || usage "$1 needs a value" ;;
    *) usage "unknown argument: $1" ;;
    esac
    case "$1" in
    --from) from=$2 ;;
    --url) url=$2 ;;
    --sha256) sha256=$2 ;;
    --coordinator) coordinator=$2 ;;
    --cert) cert=$2 ;;
    --key) key=$2 ;;
    --ca) ca=$2 ;;
    --config) config=$2 ;;
    --admin-token-file) admin_token=$2 ;;
    --read-token-file) read_token=$2 ;;
    --listen) listen=$2 ;;
    --http-listen) http_listen=$2 ;;
    --retention) retention=$2 ;;
    --unit) unit=$2 ;;
    --root) root=$2 ;;
    *) usage "unknown option: $1" ;;
    esac
    shift 2
done

[ -n "$component" ] || usage "say which component: agent or coordinator"
if [ -n "$from" ] && [ -n "$url" ]; then usage "give --from or --url, not both"; fi
[ -n "$from$url" ] || usage "give --from DIR (the built binary) or --url URL (a release tarball)"
[ -z "$sha256" ] || [ -n "$url" ] || usage "--sha256 checks a --url download"
case $url in
    "" | file://*) ;;
    *) [ -n "$sha256" ] || usage "--url $url needs --sha256: a binary fetched over the network runs as root only once checked" ;;
esac
[ -n "$cert" ] || usage "$component: --cert is required (see \`vantage-coordinator pki\`)"
[ -n "$key" ] || usage "$component: --key is required"
[ -n "$ca" ] || usage "$component: --ca is required (ca.pem from \`vantage-coordinator pki init\`)"
if [ "$component" = agent ]; then
    [ -n "$coordinator" ] || usage "agent: --coordinator https://HOST:PORT is required"
    case "$coordinator" in https://*) ;; *) usage "agent: --coordinator must be an https:// URL, not $coordinator" ;; esac
    if [ -n "$config$admin_token$read_token$retention" ]; then
        usage "agent: --config, --admin-token-file, --read-token-file and --retention are coordinator options"
    fi
else
    [ -z "$coordinator" ] || usage "coordinator: --coordinator is an agent option"
fi
for f in "$cert" "$key" "$ca" ${config:+"$config"} ${admin_token:+"$admin_token"} ${read_token:+"$read_token"}; do
    [ -f "$f" ] || die "$f: no such file"
done
if [ -n "$root" ]; then
    [ -d "$root" ] || die "--root $root: no such directory"
    root=$(cd "$root" && pwd)
fi

binary=vantage-$component
script_dir=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The binary (and, from a tarball, perhaps the unit).
if [ -n "$url" ]; then
    if command -v curl >/dev/null; then
        curl -fsSL --retry 3 -o "$work/release.tar.gz" "$url" || die "cannot download $url"
    elif command -v wget >/dev/null; then
        wget -q -O "$work/release.tar.gz" "$url" || die "cannot download $url"
    else
        die "--url needs curl or wget"
    fi
    if [ -n "$sha256" ]; then
        got=$(sha256sum "$work/release.tar.gz" | cut -d' ' -f1)
        want=$(echo "$sha256" | tr 'A-F' 'a-f')
        [ "$got" = "$want" ] || die "$url: SHA-256 is $got, not $want as --sha256 says; nothing installed"
    fi
    mkdir "$work/release"
    tar -xzf "$work/release.tar.gz" -C "$work/release" || die "$url is not a .tar.gz"
    source_binary=$(find "$work/release" -type f -name "$binary" | head -n 1)
    [ -n "$source_binary" ] || die "$url holds no $binary"
    [ -n "$unit" ] || unit=$(find "$work/release" -type f -name "$binary.service" | head -n 1)
else
    source_binary=$from/$binary
    [ -f "$source_binary" ] || die "$source_binary: no such file (build it: cargo build --release --locked --no-default-features -p $binary)"
fi
[ -x "$source_binary" ] || chmod 0755 "$source_binary" 2>/dev/null || true
"$source_binary" --version >/dev/null 2>&1 || die "$source_binary does not run here (another architecture?)"
[ -n "$unit" ] || unit=$script_dir/systemd/$binary.service
[ -f "$unit" ] || die "$unit: no such file (give --unit, the unit from deploy/systemd/)"

# The user, as on the target system or in the staging root.
uid="" gid=""
if [ -z "$root" ]; then
    if ! getent passwd vantage >/dev/null; then
        useradd --system --user-group --home-dir /var/lib/vantage --no-create-home --shell /usr/sbin/nologin vantage
        say "created the system user vantage"
    fi
    uid=vantage gid=vantage
elif [ -f "$root/etc/passwd" ]; then
    if ! grep -q '^vantage:' "$root/etc/passwd"; then
        useradd --prefix "$root" --system --user-group --home-dir /var/lib/vantage --no-create-home \
            --shell /usr/sbin/nologin vantage
        say "created the system user vantage in $root"
    fi
    uid=$(awk -F: '$1 == "vantage" { print $3 }' "$root/etc/passwd")
    gid=$(awk -F: '$1 == "vantage" { print $4 }' "$root/etc/passwd")
else
    say "$root/etc/passwd does not exist: no vantage user, files stay owned by $(id -un)"
fi

# owner FILE: hand FILE to the vantage user, where there is one.
owner() {
    if [ -n "$uid" ]; then chown "$uid:$gid" "$1"; fi
}

# put SOURCE DEST MODE [secret]: installs SOURCE as DEST unless it is already there. A secret that
# exists and differs is kept unless --force.
changed=no
put() {
    if [ -f "$2" ] && cmp -s "$1" "$2"; then
        chmod "$3" "$2"
        return 0
    fi
    if [ -f "$2" ] && [ "${4:-}" = secret ] && [ "$force" != yes ]; then
        die "$2 exists and differs from $1: not replaced (--force replaces it)"
    fi
    install -m "$3" "$1" "$2.new"
    mv -f "$2.new" "$2"
    changed=yes
    say "installed $2"
}

etc=$root/etc/vantage
pki=$etc/pki
mkdir -p "$root/usr/local/bin" "$etc" "$pki" "$root/etc/systemd/system"
chmod 0755 "$etc"
chmod 0750 "$pki"
# Readable by the service, writable only by root: the service cannot swap its own key or CA, nor
# plant a link for root to follow when this script runs again.
if [ -n "$gid" ]; then chown "root:$gid" "$pki"; fi

# Keys first: a refused key leaves everything else as it was.
put "$key" "$pki/$component.key" 0600 secret
owner "$pki/$component.key"
if [ "$component" = coordinator ]; then
    if [ -n "$admin_token" ]; then
        put "$admin_token" "$etc/admin.token" 0600 secret
    elif [ ! -f "$etc/admin.token" ]; then
        (umask 077 && head -c 32 /dev/urandom | base64 >"$etc/admin.token")
        say "made a random admin token in $etc/admin.token"
    fi
    owner "$etc/admin.token"
    if [ -n "$read_token" ]; then
        put "$read_token" "$etc/read.token" 0600 secret
        owner "$etc/read.token"
    fi
fi
put "$cert" "$pki/$component.pem" 0644
put "$ca" "$pki/ca.pem" 0644
put "$source_binary" "$root/usr/local/bin/$binary" 0755

if [ "$component" = agent ]; then
    cat >"$work/env" <<EOF
# Written by deploy/install.sh; see \`vantage-agent run --help\` for every VANTAGE_* variable.
VANTAGE_COORDINATOR=$coordinator
VANTAGE_CERT=/etc/vantage/pki/agent.pem
VANTAGE_KEY=/etc/vantage/pki/agent.key
VANTAGE_COORDINATOR_CA=/etc/vantage/pki/ca.pem
EOF
else
    {
        echo "# Written by deploy/install.sh; see \`vantage-coordinator serve --help\` for every VANTAGE_* variable."
        echo "VANTAGE_LISTEN=$listen"
        echo "VANTAGE_HTTP_LISTEN=$http_listen"
        echo "VANTAGE_TLS_CERT=/etc/vantage/pki/coordinator.pem"
        echo "VANTAGE_TLS_KEY=/etc/vantage/pki/coordinator.key"
        echo "VANTAGE_CLIENT_CA=/etc/vantage/pki/ca.pem"
        echo "VANTAGE_ADMIN_TOKEN_FILE=/etc/vantage/admin.token"
        if [ -f "$etc/read.token" ]; then echo "VANTAGE_READ_TOKEN_FILE=/etc/vantage/read.token"; fi
        if [ -n "$retention" ]; then echo "VANTAGE_RETENTION=$retention"; fi
    } >"$work/env"
    if [ -n "$config" ]; then
        put "$config" "$etc/vantage.toml" 0640
    elif [ ! -f "$etc/vantage.toml" ]; then
        printf '%s\n' "# Targets, alert channels, routes, silences and heartbeats; see the README." >"$work/vantage.toml"
        put "$work/vantage.toml" "$etc/vantage.toml" 0640
    fi
    if [ -n "$gid" ]; then chgrp "$gid" "$etc/vantage.toml"; fi
fi
put "$work/env" "$etc/$component.env" 0600
put "$unit" "$root/etc/systemd/system/$binary.service" 0644

if [ "$start" = no ]; then
    say "not enabled (--no-start): systemctl enable --now $binary.service starts it"
elif [ -n "$root" ]; then
    systemctl --root="$root" --quiet enable "$binary.service"
    say "enabled $binary.service in $root (it starts when that system boots)"
else
    systemctl daemon-reload
    if systemctl --quiet is-active "$binary.service" && [ "$changed" = yes ]; then
        systemctl restart "$binary.service"
    fi
    systemctl --quiet enable --now "$binary.service"
    say "$binary.service is enabled and running; its log: journalctl -u $binary"
fi
