#!/usr/bin/env bash
# Runs the NetworkBlockDevice/nbd project's own test client, nbd-tester-client
# (tests/run/nbd-tester-client.c), against zerofs: the tests of nbd's
# tests/run/simple_test that talk to a server over TCP, plain and over TLS.
# A developer tool, not part of `make test` or CI: it builds C code from
# another project and needs its build dependencies.
#
#   scripts/nbd-tester-client.sh [TEST...]     (default: every test below)
#
# Tests, with the client arguments nbd's simple_test uses for them:
#   cfg1           -N E                     read the whole export, 1 KiB reads
#   handshake      -h -N E                  unknown option -> NBD_REP_ERR_UNSUP, then NBD_OPT_ABORT
#   cfgsize        -o -N E                  1 MiB read, then 1 MiB+14 and 2 MiB+28 (unaligned):
#                                           both must succeed or both fail
#   write          -w -N E                  write the whole export, 1 KiB writes
#   flush          -w -f -N E               same, with FLUSH and FUA (needs both advertised)
#   integrity      -i -t integrity-test.tr  replays a recorded trace (<=127 KiB requests,
#                                           pipelined) and checks every byte read back
#   integrityhuge  -i -t integrityhuge-test.tr   same with requests up to 47.6 MiB
#   tls            integrity over TLS, client cert signed by the test CA
#   tlshuge        integrityhuge over TLS
#   tlswrongcert   -F, client presents a self-signed cert: must be refused
# All of them negotiate with NBD_OPT_EXPORT_NAME (no NBD_OPT_GO, so no block
# size constraints are negotiated), after NBD_OPT_STARTTLS for the tls ones.
# Not run: rowrite/rotree (need a read-only export, which zerofs only makes
# by clearing the owner write bit over NFS), tree (a server-side mode; the
# client side is `write`), unix, inetd, list, connstatus, nlconnect, persist
# (nbd-server's own modes, or nbd-client rather than this client).
#
# Environment:
#   NBD_TAG      nbd release to build the client from (default nbd-3.27.1)
#   NBD_SRC      checkout to build in (default /tmp/nbd-src); the build is
#                skipped when $NBD_SRC/tests/run/nbd-tester-client exists
#                with TLS compiled in. Delete the directory to rebuild.
#   NBD_GIT_DIR  a local (bare) git repository of nbd to clone from instead of
#                https://github.com/NetworkBlockDevice/nbd
#   ZEROFS_BIN   an existing zerofs binary (default: go build ./cmd/zerofs)
#   ZEROFS_TLS_MODE  tls mode for the TLS tests: "require" (default) or "on"
#   TEST_TIMEOUT seconds per test (default 600)
#   KEEP=1       keep the work directory (it is kept anyway when a test fails)
#
# Build dependencies of the client (Debian 12): gcc make autoconf automake
# libtool autoconf-archive pkg-config bison flex libglib2.0-dev
# libgnutls28-dev. libnl and docbook are not needed (configure is run with
# --without-libnl --disable-manpages).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
NBD_TAG=${NBD_TAG:-nbd-3.27.1}
NBD_SRC=${NBD_SRC:-/tmp/nbd-src}
NBD_URL=https://github.com/NetworkBlockDevice/nbd
TLS_MODE=${ZEROFS_TLS_MODE:-require}
TEST_TIMEOUT=${TEST_TIMEOUT:-600}
# 50 MiB: the filesize nbd's simple_test gives the integrity and tls exports.
# integrity-test.tr touches every byte up to exactly 52428800, and
# integrityhuge-test.tr up to 49948672, so no smaller export will do. It is a
# multiple of 4096, as zerofs nbd create requires.
EXPORT_SIZE=52428800

ALL_TESTS=(cfg1 handshake cfgsize write flush integrity integrityhuge tls tlshuge tlswrongcert)
if (($#)); then TESTS=("$@"); else TESTS=("${ALL_TESTS[@]}"); fi
want() { local t; for t in "${TESTS[@]}"; do [[ $t == "$1" ]] && return 0; done; return 1; }

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'nbd-tester-client.sh: %s\n' "$*" >&2; exit 2; }

# ---------------------------------------------------------------------------
# 1. The client.

TESTER=$NBD_SRC/tests/run/nbd-tester-client

build_tester() {
	# Built with TLS already? The binary alone does not say: without GnuTLS
	# it accepts -C/-K/-A and then exits 77 (skip), so look at config.h.
	if [[ -x $TESTER ]] && grep -q '^#define HAVE_GNUTLS 1' "$NBD_SRC/config.h" 2>/dev/null; then
		return
	fi
	local missing=()
	for cmd in gcc make autoreconf libtoolize pkg-config bison flex; do
		command -v "$cmd" >/dev/null || missing+=("$cmd")
	done
	# configure.ac m4_fatal()s without autoconf-archive's AX_PROG_BISON.
	[[ -e /usr/share/aclocal/ax_prog_bison.m4 ]] || missing+=(autoconf-archive)
	pkg-config --exists glib-2.0 2>/dev/null || missing+=(libglib2.0-dev)
	pkg-config --exists gnutls 2>/dev/null || missing+=(libgnutls28-dev)
	if ((${#missing[@]})); then
		die "missing to build nbd-tester-client: ${missing[*]}
  on Debian: apt-get install gcc make autoconf automake libtool autoconf-archive pkg-config bison flex libglib2.0-dev libgnutls28-dev"
	fi
	if [[ ! -f $NBD_SRC/configure.ac ]]; then
		local from=$NBD_URL
		# A local repository is cloned through file:// so that --depth works.
		[[ -n ${NBD_GIT_DIR:-} ]] && from=file://$(cd "$NBD_GIT_DIR" && pwd)
		log "cloning $from at $NBD_TAG into $NBD_SRC"
		rm -rf "$NBD_SRC"
		git -c advice.detachedHead=false clone --quiet --depth 1 --branch "$NBD_TAG" "$from" "$NBD_SRC"
	fi
	log "building nbd-tester-client in $NBD_SRC (log: $NBD_SRC/build.log)"
	(
		cd "$NBD_SRC"
		./autogen.sh
		# --with-gnutls makes configure fail rather than silently build
		# a client whose TLS tests all skip.
		./configure --with-gnutls --without-libnl --disable-manpages
		# Only the client: it is a check_PROGRAM of tests/run, so a plain
		# `make` would not build it, and `make check` would run nbd-server.
		make -C tests/run nbd-tester-client
	) >"$NBD_SRC/build.log" 2>&1 || { tail -30 "$NBD_SRC/build.log" >&2; die "building nbd-tester-client failed"; }
}
build_tester
RUNDIR=$NBD_SRC/tests/run   # integrity-test.tr, integrityhuge-test.tr, certs/

# ---------------------------------------------------------------------------
# 2. zerofs.

WORK=$(mktemp -d "${TMPDIR:-/tmp}/zerofs-nbd-tester.XXXXXX")
ZPID=
FAILED=0
# stop_zerofs stops the instance started last (SIGTERM: it flushes and stops).
stop_zerofs() {
	[[ -n $ZPID ]] || return 0
	kill -TERM "$ZPID" 2>/dev/null || true
	wait "$ZPID" 2>/dev/null || true
	ZPID=
}

cleanup() {
	stop_zerofs
	if [[ ${KEEP:-} == 1 || $FAILED != 0 ]]; then
		echo "work directory (configs, zerofs and client logs): $WORK" >&2
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

if [[ -n ${ZEROFS_BIN:-} ]]; then
	ZEROFS=$ZEROFS_BIN
else
	log "building zerofs"
	(cd "$REPO" && go build -o "$WORK/zerofs" ./cmd/zerofs)
	ZEROFS=$WORK/zerofs
fi

# free_port picks a loopback port nothing listens on (a connect to it fails).
# Racy in principle, good enough on a developer machine.
USED_PORTS=" "
free_port() {
	local p
	for _ in $(seq 200); do
		p=$((20000 + RANDOM % 40000))
		[[ $USED_PORTS == *" $p "* ]] && continue
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			USED_PORTS+="$p "
			echo "$p"
			return
		fi
	done
	die "no free port found"
}

# write_config DIR NBD_PORT ADMIN_PORT [extra lines for [servers.nbd]]
# A throwaway instance: store and cache in DIR, NFS off (empty addresses),
# small caches (the disk cache is preallocated), debug log level because
# that is where zerofs logs each refused request ("nbd: request refused").
write_config() {
	cat >"$1/zerofs.toml" <<EOF
[cache]
dir = "$1/cache"
disk_size_gb = 0.25
memory_size_gb = 0.25

[storage]
url = "file://$1/store"
encryption_password = "nbd-tester-client-throwaway"

[servers.nbd]
addresses = ["127.0.0.1:$2"]
${4:-}

[servers.nfs]
addresses = []

[servers.admin]
address = "127.0.0.1:$3"

[log]
level = "debug"
EOF
}

# start_zerofs DIR: runs zerofs in the background and waits until it serves.
# Returns 1 if it exited instead (its log is DIR/zerofs.log).
start_zerofs() {
	"$ZEROFS" run -c "$1/zerofs.toml" >"$1/zerofs.log" 2>&1 &
	ZPID=$!
	for _ in $(seq 600); do
		grep -q '^zerofs is ready' "$1/zerofs.log" && return 0
		if ! kill -0 "$ZPID" 2>/dev/null; then
			wait "$ZPID" || true
			ZPID=
			return 1
		fi
		sleep 0.1
	done
	die "zerofs did not become ready in 60 s; see $1/zerofs.log"
}

# Every integrity run needs an export of its own: the client assumes that
# every block it has not written in this run reads back as zeros.
create_export() { "$ZEROFS" nbd create "$2" --size "$EXPORT_SIZE" -c "$1/zerofs.toml" >/dev/null; }

# ---------------------------------------------------------------------------
# 3. Running tests.

declare -A RESULT=()
ORDER=()

# run_test NAME DIR PORT EXPECT CLIENT-ARGS...
# EXPECT is "ok" (exit 0) or "tls-refused" (tlswrongcert: exit 0 *and* a TLS
# handshake that failed; see the TLS section). Client output goes to
# DIR/NAME.log; on failure its tail and what zerofs logged meanwhile at WARN
# or above, or as a refused request, are shown.
run_test() {
	local name=$1 dir=$2 port=$3 expect=$4
	shift 4
	local out=$dir/$name.log from rc=0 verdict=PASS why=""
	from=$(($(wc -l <"$dir/zerofs.log") + 1))
	log "$name: nbd-tester-client $* 127.0.0.1 $port"
	# NBD_TEST_SILENT: no progress lines rewritten with \r.
	NBD_TEST_SILENT=1 timeout "$TEST_TIMEOUT" "$TESTER" "$@" 127.0.0.1 "$port" >"$out" 2>&1 || rc=$?
	if ((rc == 124)); then
		verdict=FAIL why="timed out after ${TEST_TIMEOUT}s"
	elif ((rc != 0)); then
		verdict=FAIL why=$(grep -m1 -o 'Could not run test: .*' "$out" || echo "exit status $rc")
	elif [[ $expect == tls-refused ]] && ! grep -q 'TLS handshake failed' "$out"; then
		# The client also "fails as expected" when STARTTLS itself is
		# refused or the export is missing: that proves nothing.
		verdict=FAIL why="client failed as expected, but not in a TLS handshake: $(grep -m1 -o 'Could not open socket: .*' "$out" || echo '?')"
	fi
	local zlog
	zlog=$(tail -n +"$from" "$dir/zerofs.log" | grep -E 'level=(WARN|ERROR)|request refused|handshake|tls|TLS' || true)
	if [[ $verdict == FAIL ]]; then
		FAILED=1
		if grep -q 'exceeds the maximum payload' <<<"$zlog"; then
			why+=" (zerofs refused requests above its maximum payload; see below)"
		fi
		echo "--- $name: client output (tail):" >&2
		tail -5 "$out" | sed 's/^/    /' >&2
		if [[ -n $zlog ]]; then
			echo "--- $name: zerofs log meanwhile (WARN+, refused requests, TLS; first 10):" >&2
			head -10 <<<"$zlog" | sed 's/^/    /' >&2
		fi
	fi
	RESULT[$name]="$verdict${why:+: $why}"
	ORDER+=("$name")
	printf '%-14s %s\n' "$name" "${RESULT[$name]}"
}

skip_test() {
	RESULT[$1]="SKIP: $2"
	ORDER+=("$1")
	printf '%-14s %s\n' "$1" "${RESULT[$1]}"
}

# --- Plaintext tests -------------------------------------------------------

if want cfg1 || want handshake || want cfgsize || want write || want flush || want integrity || want integrityhuge; then
	P=$WORK/plain
	mkdir -p "$P"
	NBD_PORT=$(free_port)
	write_config "$P" "$NBD_PORT" "$(free_port)"
	start_zerofs "$P" || { cat "$P/zerofs.log" >&2; FAILED=1; die "zerofs did not start"; }
	log "zerofs serving NBD on 127.0.0.1:$NBD_PORT (log: $P/zerofs.log)"
	for e in ro0 wr0 int0 inthuge0; do create_export "$P" "$e"; done

	want cfg1 && run_test cfg1 "$P" "$NBD_PORT" ok -N ro0
	want handshake && run_test handshake "$P" "$NBD_PORT" ok -h -N ro0
	# cfgsize: the client reads a reply's data even when the reply is an
	# error, so a server refusing the 1 MiB+14 read hangs it (the timeout
	# catches that). zerofs serves all three.
	want cfgsize && run_test cfgsize "$P" "$NBD_PORT" ok -o -N ro0
	want write && run_test write "$P" "$NBD_PORT" ok -w -N wr0
	want flush && run_test flush "$P" "$NBD_PORT" ok -w -f -N wr0
	want integrity && run_test integrity "$P" "$NBD_PORT" ok -i -t "$RUNDIR/integrity-test.tr" -N int0
	# integrityhuge sends READs and WRITEs of up to 49865728 bytes (47.6 MiB)
	# without having negotiated a block size (NBD_OPT_EXPORT_NAME):
	# nbd-server serves them; a zerofs that refuses requests above 32 MiB
	# fails it with EINVAL ("Server errored a transaction"). Newer zerofs
	# serves up to [servers.nbd] max_payload_mb (default 64).
	want integrityhuge && run_test integrityhuge "$P" "$NBD_PORT" ok -i -t "$RUNDIR/integrityhuge-test.tr" -N inthuge0
	stop_zerofs
fi

# --- TLS tests -------------------------------------------------------------
#
# What nbd's own suite does (simple_test, tls/tlshuge/tlswrongcert): nbd-server
# with certfile/keyfile/cacertfile from tests/run/certs, TLS optional (no
# force_tls). On STARTTLS it requests a client certificate and its verify
# callback fails the handshake unless the client presents one signed by
# ca-cert.pem: in effect client certificates are required and verified.
# The client (crypto-gnutls.c) speaks TLS 1.2 only
# ("NORMAL:-VERS-TLS-ALL:+VERS-TLS1.2"), so the server must accept TLS 1.2:
# tls_min_version = "1.2" (zerofs defaults to 1.3).
#
#   tls, tlshuge  present client-cert.pem/client-key.pem, verify the server
#                 against ca-cert.pem with host name "localhost" (-H): the
#                 server cert's CN is localhost (it has no subjectAltName;
#                 GnuTLS falls back to the CN). Then EXPORT_NAME and the
#                 integrity / integrityhuge trace.
#   tlswrongcert  presents selfsigned-cert.pem (not from that CA) and no -A
#                 (does not check the server), runs the read test with -F:
#                 passes if the connection fails. GnuTLS only sends a client
#                 certificate whose issuer is in the server's list of
#                 acceptable CAs, which Go sends, so against a Go server this
#                 client sends *no* certificate: the server must require one
#                 (tls.RequireAndVerifyClientCert), verify-if-given lets it in
#                 and the test fails. It also "passes" against a server that
#                 refuses STARTTLS; run_test counts that as a failure.
#
# zerofs's layout for tls_certificates is a directory holding ca-cert.pem,
# server-cert.pem and server-key.pem: the names nbd's tests/run/certs uses
# (ca-cert.pem signed server-cert.pem and client-cert.pem; CN "Alex Bligh",
# valid to 2033). Copied so that the key can be made private.

if want tls || want tlshuge || want tlswrongcert; then
	T=$WORK/tls
	mkdir -p "$T/pki"
	cp "$RUNDIR/certs/ca-cert.pem" "$RUNDIR/certs/server-cert.pem" "$RUNDIR/certs/server-key.pem" "$T/pki/"
	chmod 600 "$T/pki/server-key.pem"
	TLS_PORT=$(free_port)
	write_config "$T" "$TLS_PORT" "$(free_port)" "tls = \"$TLS_MODE\"
tls_certificates = \"$T/pki\"
tls_verify_peer = true
tls_min_version = \"1.2\""
	if ! start_zerofs "$T"; then
		if grep -q 'servers\.nbd\.tls.*unknown key' "$T/zerofs.log"; then
			echo "TLS: zerofs build has no TLS support yet; skipped ($(grep -o -m1 'servers\.nbd\.tls[a-z_]*: unknown key' "$T/zerofs.log"))"
			for t in tls tlshuge tlswrongcert; do want "$t" && skip_test "$t" "zerofs has no TLS support"; done
		else
			cat "$T/zerofs.log" >&2
			FAILED=1
			die "zerofs did not start with the TLS configuration"
		fi
	else
		log "zerofs serving NBD with tls = \"$TLS_MODE\" on 127.0.0.1:$TLS_PORT (log: $T/zerofs.log)"
		for e in tls0 tlshuge0 tlsro0; do create_export "$T" "$e"; done
		C=$RUNDIR/certs
		want tls && run_test tls "$T" "$TLS_PORT" ok -i -t "$RUNDIR/integrity-test.tr" \
			-C "$C/client-cert.pem" -K "$C/client-key.pem" -A "$C/ca-cert.pem" -H localhost -N tls0
		want tlshuge && run_test tlshuge "$T" "$TLS_PORT" ok -i -t "$RUNDIR/integrityhuge-test.tr" \
			-C "$C/client-cert.pem" -K "$C/client-key.pem" -A "$C/ca-cert.pem" -H localhost -N tlshuge0
		want tlswrongcert && run_test tlswrongcert "$T" "$TLS_PORT" tls-refused \
			-C "$C/selfsigned-cert.pem" -K "$C/selfsigned-key.pem" -F -N tlsro0
		stop_zerofs
	fi
fi

# ---------------------------------------------------------------------------
echo
echo "nbd-tester-client ($NBD_TAG) against zerofs:"
for t in "${ORDER[@]}"; do printf '  %-14s %s\n' "$t" "${RESULT[$t]}"; done
exit "$FAILED"
