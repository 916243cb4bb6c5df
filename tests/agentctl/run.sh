#!/bin/sh
# run.sh - transcript test of what agentctl prints and the exit codes it
# returns: without agentd and without a queue, with agentd running, and
# after agentd stopped (status and dlq read from the database).
#
# Every command's stdout and stderr and its exit code are written to one
# transcript; values that change from run to run (pids, ages, sizes, times,
# hashes, the temporary directory) are masked, and the result is compared
# with tests/agentctl/expected.txt. After an intended change regenerate it
# from the repository root with
#
#     UPDATE_TRANSCRIPTS=1 tests/agentctl/run.sh
#
# and review the diff. Needs $O/agentctl and $O/agentd (O defaults to build).
# The output points at 127.0.0.1:1, where nothing listens, so its state is
# always "connection refused".
set -u

O=${O:-build}
HERE=$(dirname "$0")
EXPECTED=$HERE/expected.txt
AGENTCTL=$(cd "$O" && pwd)/agentctl
AGENTD=$(cd "$O" && pwd)/agentd

T=$(mktemp -d /tmp/test_agentctl.XXXXXX) || exit 1
PID=
cleanup() {
	if [ -n "$PID" ]; then
		kill "$PID" 2>/dev/null
		wait "$PID" 2>/dev/null
	fi
	rm -rf "$T"
}
trap cleanup EXIT INT TERM

mkdir "$T/state"
printf '{"t":21.5}\nnot json\n{"t":21.7}\n' > "$T/in.log"
cat > "$T/agentd.conf" <<EOF
[agent]
id = gw-test
state_dir = $T/state
[input sensors]
driver = tail
path = $T/in.log
parser = json
[output lake]
type = mqtt
url = mqtt://127.0.0.1:1
EOF

mask() {
	sed -E \
	    -e "s#$T#TMP#g" \
	    -e 's/[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z/YYYY-MM-DDTHH:MM:SSZ/g' \
	    -e 's/^key: .*/key:     KEY/' \
	    -e 's/pid [0-9]+, up [0-9a-z]+/pid PID, up UP/' \
	    -e 's/sha256 [0-9a-f]{12}/sha256 HASH/' \
	    -e 's/[0-9]+(d[0-9]{2}h|h[0-9]{2}m|m[0-9]{2}s|s) ago/AGE ago/g' \
	    -e 's/oldest [0-9]+(d[0-9]{2}h|h[0-9]{2}m|m[0-9]{2}s|s)/oldest AGE/g' \
	    -e 's/[0-9]+(\.[0-9])? (B|KiB|MiB|GiB)/SIZE/g' \
	    -e 's/[0-9]+\.[0-9] rec\/s/RATE rec\/s/g' \
	    -e 's/\([0-9]+\.[0-9]%\)/(PCT%)/' \
	    -e 's/^agentctl [0-9][^ ]*$/agentctl VERSION/' \
	    -e 's/qos[0-9] //' \
	    -e 's/, next retry in [0-9a-z]+$//'
}

# Run agentctl with the test config and record what it said.
run() {
	echo "\$ agentctl $*"
	"$AGENTCTL" -c "$T/agentd.conf" "$@" > "$T/out" 2>&1
	rc=$?
	mask < "$T/out"
	echo "[exit $rc]"
	echo
}

# The same without the test config: the command line as given.
run_bare() {
	echo "\$ agentctl $*" | mask
	"$AGENTCTL" "$@" > "$T/out" 2>&1
	rc=$?
	mask < "$T/out"
	echo "[exit $rc]"
	echo
}

# agentd's command line: only what it says and its exit code.
run_agentd() {
	echo "\$ agentd $*" | mask
	"$AGENTD" "$@" > "$T/out" 2>&1
	rc=$?
	mask < "$T/out" | head -n 3
	echo "[exit $rc]"
	echo
}

# Wait until the condition command succeeds (up to 10 s).
wait_for() {
	i=0
	while ! "$@" > /dev/null 2>&1; do
		i=$((i + 1))
		[ $i -gt 100 ] && return 1
		sleep 0.1
	done
	return 0
}

dlq_has_entry() {
	"$AGENTCTL" -c "$T/agentd.conf" dlq show 1
}

status_settled() {
	"$AGENTCTL" -c "$T/agentd.conf" status > "$T/st" &&
		grep -q 'backlog 2 records' "$T/st" &&
		grep -q 'DISCONNECTED: connection refused' "$T/st"
}

# Where no config file is named, agentctl and agentd look at $AGENTD_CONFIG.
unset AGENTD_CONFIG

{
	echo "## command lines that cannot be right"
	run_agentd --frobnicate
	run_agentd -x
	run_agentd --print-config-reference=bogus
	run_agentd --check-config
	run_agentd -c
	run_agentd --version=2
	run_agentd --help=yes
	run_agentd "$T/agentd.conf"
	run_agentd --check-config "$T/agentd.conf" extra
	run_bare --frobnicate status
	run_bare -x status
	run_bare -c
	run status -s
	run_bare -s "" status
	run_bare --help=yes
	run version 2
	run help me
	run status --json extra
	run ping now

	echo "## no agentd, no queue"
	run help
	run version
	run
	run frobnicate
	run status --verbose
	run dlq
	run dlq show
	run dlq show 'two words'
	run status
	run dlq list
	run ping

	echo "## agentd running"
	"$AGENTD" -c "$T/agentd.conf" > "$T/agentd.log" 2>&1 &
	PID=$!
	wait_for "$AGENTCTL" -c "$T/agentd.conf" ping || echo "agentd did not start"
	wait_for dlq_has_entry || echo "no dead-letter entry appeared"
	wait_for status_settled || echo "status did not settle"
	run ping
	run status
	run dlq list
	run dlq show 1
	run dlq show 7
	run dlq list --limit 0
	run dlq replay 1
	run dlq list

	echo "## no config file: the defaults, and which file was looked for"
	(export AGENTD_CONFIG="$T/missing.conf"; run_bare -s "$T/state/agentd.sock" status)
	(export AGENTD_CONFIG="$T/missing.conf"; run_bare -s "$T/none.sock" ping)
	run_bare -c "$T/missing.conf" -s "$T/none.sock" ping

	echo "## agentd stopped"
	kill -TERM "$PID"
	wait "$PID"
	echo "agentd exit status $?"
	PID=
	echo
	run status
	run dlq list
	run ping
	run dlq purge all
} > "$T/transcript" 2>&1

if [ "${UPDATE_TRANSCRIPTS:-}" = 1 ]; then
	cp "$T/transcript" "$EXPECTED"
	echo "updated $EXPECTED"
	exit 0
fi
if ! diff -u "$EXPECTED" "$T/transcript"; then
	echo "agentctl transcript: FAILED (UPDATE_TRANSCRIPTS=1 $0 regenerates after an intended change)"
	exit 1
fi
echo "agentctl transcript: 1 passed, 0 failed, 0 skipped"
