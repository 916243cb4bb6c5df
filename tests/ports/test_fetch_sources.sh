#!/bin/sh
# test_fetch_sources - ports/static/fetch-sources against a fake apt-get and
# apt-cache first on PATH (no network): the newest version of a source
# package answering 404 falls back to the next older one and records it; a
# fetch killed half-way is not trusted by the next run; a package none of
# whose versions can be fetched fails with its name and leaves no stamp;
# STATIC_NEWEST=1 refuses the fallback.
set -u
cd "$(dirname "$0")/../.." || exit 1
ROOT=$(pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/test-fetch-sources.XXXXXX")
trap 'rm -rf "$W"' EXIT
FAKE=$W/fake
export FAKE
mkdir -p "$FAKE/bin"
fails=0

ok() { printf 'ok   %s\n' "$1"; }
bad() {
	printf 'FAIL %s\n' "$1"
	fails=$((fails + 1))
}
# expect DESCRIPTION TEST-ARGS...: one assertion, by test(1)
expect() {
	d=$1
	shift
	if [ "$@" ]; then ok "$d"; else bad "$d"; fi
}

# The package indexes: "PKG VERSION SUITE" per source, in no useful order,
# as a mirror with the main suite and the security suite has them.
cat >"$FAKE/index" <<'EOF'
mbedtls 2.28.3-1 bookworm
curl 7.88.1-10+deb12u5 bookworm-security
curl 7.88.1-10+deb12u15 bookworm
libzstd 1.5.4+dfsg2-5 bookworm
libzstd 1.5.4+dfsg2-5+deb12u1 bookworm-security
zlib 1:1.2.13.dfsg-1 bookworm
zlib 1:1.2.13.dfsg-1 bookworm-security
zlib 1:1.2.13.dfsg-1+deb12u1 bookworm-security
nothing 1.0-1 bookworm
EOF

cat >"$FAKE/bin/apt-cache" <<'EOF'
#!/bin/sh
# apt-cache madison PKG from $FAKE/index; a binary package of the same
# name with a version of its own is listed too and must be ignored.
[ "$1" = madison ] || exit 1
while read -r p v s; do
	[ "$p" = "$2" ] || continue
	printf '%10s | %s | http://deb.debian.org/debian %s/main Sources\n' "$p" "$v" "$s"
	printf '%10s | 99.0-1 | http://deb.debian.org/debian %s/main amd64 Packages\n' "$p" "$s"
done <"$FAKE/index"
EOF

# apt-get source [options] PKG[=VERSION]...: without a version, the newest
# in $FAKE/index. Each PKG=VERSION is logged to $FAKE/calls. One listed in
# $FAKE/missing answers 404 after its .dsc arrived (as the real mirror
# does), and then nothing is unpacked; in $FAKE/wrong it unpacks another
# version; in $FAKE/kill it unpacks half a tree, then SIGKILLs the fetch
# (pid in $FAKE/victim) and itself. Otherwise a tiny tree PKG-src/.
cat >"$FAKE/bin/apt-get" <<'EOF'
#!/bin/sh
[ "$1" = source ] || exit 1
shift
newest() {
	n=""
	for v in $(awk -v p="$1" '$1 == p { print $2 }' "$FAKE/index"); do
		if [ -z "$n" ] || dpkg --compare-versions "$v" gt "$n"; then n=$v; fi
	done
	echo "$n"
}
specs=""
for a; do
	case $a in
	-*) ;;
	*=*) specs="$specs $a" ;;
	*) specs="$specs $a=$(newest "$a")" ;;
	esac
done
listed() { [ -f "$FAKE/$1" ] && grep -qxF "$2" "$FAKE/$1"; }
status=0
for spec in $specs; do
	echo "$spec" >>"$FAKE/calls"
	pkg=${spec%%=*} ver=${spec#*=}
	if listed missing "$spec"; then
		echo "dsc of $spec" >"${pkg}_$ver.dsc"
		echo "E: Failed to fetch http://deb.debian.org/debian-security/pool/$pkg.orig.tar.xz  404  Not Found"
		status=100
	fi
done
if [ "$status" -ne 0 ]; then
	echo "E: Failed to fetch some archives."
	exit "$status"
fi
for spec in $specs; do
	pkg=${spec%%=*} ver=${spec#*=}
	mkdir -p "$pkg-src/debian"
	if listed kill "$spec"; then
		echo "half a file" >"$pkg-src/part.c"
		kill -KILL "$(cat "$FAKE/victim")"
		kill -KILL $$
	fi
	listed wrong "$spec" && ver=0.0-0
	echo "$pkg ($ver) bookworm; urgency=medium" >"$pkg-src/debian/changelog"
	echo "$ver" >"$pkg-src/content"
done
exit 0
EOF
chmod +x "$FAKE/bin/apt-cache" "$FAKE/bin/apt-get"

# fetch DIR [PKG...]: run fetch-sources into DIR/src with the fakes;
# output in $W/out, status in $rc.
fetch() {
	dir=$1
	shift
	: >"$FAKE/calls"
	# shellcheck disable=SC2016 # $$ is the inner shell's pid, then fetch-sources'
	PATH="$FAKE/bin:$PATH" STATIC_DIR=$dir \
		sh -c 'echo $$ >"$FAKE/victim"; r=$1; shift; exec sh "$r"/ports/static/fetch-sources "$@"' \
		sh "$ROOT" "$@" >"$W/out" 2>&1
	rc=$?
}
stamp() { cat "$1/src/$2/.fetched" 2>/dev/null; }
called() { grep -qxF "$1" "$FAKE/calls"; }
leftovers() { find "$1/src" -maxdepth 1 -name '.tmp-*' | grep -c . || true; }

# ---- 1. the newest source answers 404: the next older version is fetched
D=$W/fresh
printf '%s\n' "libzstd=1.5.4+dfsg2-5+deb12u1" "zlib=1:1.2.13.dfsg-1+deb12u1" >"$FAKE/missing"
fetch "$D" mbedtls curl libzstd zlib
expect "a fallback is a success (exit $rc)" "$rc" -eq 0
expect "libzstd: the main suite's version, the newest recorded" \
	"$(stamp "$D" libzstd)" = "1.5.4+dfsg2-5 1.5.4+dfsg2-5+deb12u1"
expect "libzstd: the tree in place is that version" \
	"$(cat "$D/src/libzstd/content" 2>/dev/null)" = "1.5.4+dfsg2-5"
expect "zlib: the epoch kept, the older version fetched" \
	"$(stamp "$D" zlib)" = "1:1.2.13.dfsg-1 1:1.2.13.dfsg-1+deb12u1"
expect "zlib: the newest tried first" \
	"$(grep '^zlib=' "$FAKE/calls" | head -n 1)" = "zlib=1:1.2.13.dfsg-1+deb12u1"
expect "zlib: a version in two suites tried once" \
	"$(grep -cxF 'zlib=1:1.2.13.dfsg-1' "$FAKE/calls")" -eq 1
expect "curl: newest by Debian's version order, not the binary package's" \
	"$(stamp "$D" curl)" = "7.88.1-10+deb12u15 7.88.1-10+deb12u15"
expect "each package fetched on its own" "$(grep -c . "$FAKE/calls")" -eq 6
expect "the versions file records each package" "$(cat "$D/src/versions" 2>/dev/null)" = \
	"mbedtls 2.28.3-1 2.28.3-1
curl 7.88.1-10+deb12u15 7.88.1-10+deb12u15
libzstd 1.5.4+dfsg2-5 1.5.4+dfsg2-5+deb12u1
zlib 1:1.2.13.dfsg-1 1:1.2.13.dfsg-1+deb12u1"
expect "the fallback is reported" \
	"$(grep -c 'newest source of libzstd, 1.5.4+dfsg2-5+deb12u1, could not be fetched' "$W/out")" -eq 1
expect "no temporary directory left" "$(leftovers "$D")" -eq 0
expect "the failed download's files are gone" "$(find "$D/src" -name '*deb12u1.dsc' | grep -c .)" -eq 0

# ---- 2. a second run fetches nothing
: >"$FAKE/missing"
fetch "$D" mbedtls curl libzstd zlib
expect "second run: success (exit $rc)" "$rc" -eq 0
expect "second run: no download" "$(grep -c . "$FAKE/calls")" -eq 0

# ---- 3. a fetch killed half-way, and a tree without its stamp
D=$W/killed
echo "libzstd=1.5.4+dfsg2-5+deb12u1" >"$FAKE/kill"
fetch "$D" mbedtls libzstd
expect "the killed fetch did not succeed (exit $rc)" "$rc" -ne 0
expect "it left its temporary directory" "$(leftovers "$D")" -eq 1
expect "it left no libzstd tree" "$(stamp "$D" libzstd)" = ""
: >"$FAKE/kill"
# A tree unpacked in place without a stamp (by hand, or cut short).
mkdir -p "$D/src/zlib/debian"
echo "stale" >"$D/src/zlib/stale.c"
fetch "$D" mbedtls libzstd zlib
expect "the next run succeeds (exit $rc)" "$rc" -eq 0
expect "libzstd fetched again, whole" "$(stamp "$D" libzstd)" = \
	"1.5.4+dfsg2-5+deb12u1 1.5.4+dfsg2-5+deb12u1"
expect "the half-finished download is gone" "$(leftovers "$D")" -eq 0
expect "no half file in the new tree" ! -e "$D/src/libzstd/part.c"
expect "the unstamped zlib tree is fetched again" "$(stamp "$D" zlib)" = \
	"1:1.2.13.dfsg-1+deb12u1 1:1.2.13.dfsg-1+deb12u1"
expect "nothing of the unstamped tree kept" ! -e "$D/src/zlib/stale.c"
expect "the stamped mbedtls is not fetched again" "$(called mbedtls=2.28.3-1 && echo again)" = ""

# ---- 4. the earlier layout: all packages at once, one stamp for all
D=$W/earlier
mkdir -p "$D/src/libzstd-1.5.4+dfsg2/debian"
touch "$D/src/.fetched" "$D/src/libzstd_1.5.4+dfsg2-5+deb12u1.dsc"
fetch "$D" libzstd
expect "earlier layout: fetched anew (exit $rc)" "$(stamp "$D" libzstd)" = \
	"1.5.4+dfsg2-5+deb12u1 1.5.4+dfsg2-5+deb12u1"
expect "earlier layout: its files removed" \
	"$(find "$D/src" -maxdepth 1 \( -name '.fetched' -o -name 'libzstd?*' \) | grep -c .)" -eq 0

# ---- 5. an unpack of another version than asked is not trusted
D=$W/wrong
echo "libzstd=1.5.4+dfsg2-5+deb12u1" >"$FAKE/wrong"
fetch "$D" libzstd
: >"$FAKE/wrong"
expect "wrong version: the next one fetched (exit $rc)" "$(stamp "$D" libzstd)" = \
	"1.5.4+dfsg2-5 1.5.4+dfsg2-5+deb12u1"

# ---- 6. no version can be fetched: a failure naming the package
D=$W/none
printf '%s\n' "libzstd=1.5.4+dfsg2-5+deb12u1" "libzstd=1.5.4+dfsg2-5" >"$FAKE/missing"
fetch "$D" mbedtls libzstd
expect "unfetchable: exit status non-zero ($rc)" "$rc" -ne 0
expect "unfetchable: every version tried" \
	"$(grep -c 'no version of libzstd could be fetched (tried 1.5.4+dfsg2-5+deb12u1 1.5.4+dfsg2-5)' "$W/out")" -eq 1
expect "unfetchable: apt-get's 404 shown" "$(grep -c '404  Not Found' "$W/out")" -ge 1
expect "unfetchable: no stamp, no tree" ! -e "$D/src/libzstd"
expect "unfetchable: the others fetched" "$(stamp "$D" mbedtls)" = "2.28.3-1 2.28.3-1"
expect "unfetchable: not in the versions file" "$(cut -d' ' -f1 "$D/src/versions")" = mbedtls
: >"$FAKE/missing"

# ---- 7. STATIC_NEWEST=1: no fallback
D=$W/newest
echo "libzstd=1.5.4+dfsg2-5+deb12u1" >"$FAKE/missing"
export STATIC_NEWEST=1
fetch "$D" libzstd
unset STATIC_NEWEST
: >"$FAKE/missing"
expect "STATIC_NEWEST=1: the newest unfetchable is an error ($rc)" "$rc" -ne 0
expect "STATIC_NEWEST=1: no older version tried" "$(grep -c . "$FAKE/calls")" -eq 1

# ---- 8. a package the indexes do not know
fetch "$W/unknown" zstd-unknown
expect "unknown package: exit status non-zero ($rc)" "$rc" -ne 0
expect "unknown package: the message says what is missing" \
	"$(grep -c 'know no source of zstd-unknown' "$W/out")" -eq 1

if [ "$fails" -ne 0 ]; then
	echo "last fetch-sources output:"
	sed 's/^/  | /' "$W/out"
	exit 1
fi
exit 0
