#!/usr/bin/env bash
# Runs go-nsq v1.1.0's own test suite (from the Go module cache, nothing of
# it is kept in this repository) against Sluice's nsqd and nsqlookupd,
# started the way go-nsq's test.sh starts NSQ's: fixed ports 4150/4151 and
# 4160/4161 on 127.0.0.1, TLS cert/key/CA from go-nsq's test/ folder and a
# fresh --data-path.
set -euo pipefail
cd "$(dirname "$0")/.."
GONSQ_VERSION=v1.1.0
work=$(mktemp -d -t sluice-gonsq.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

for port in 4150 4151 4160 4161; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		echo "gonsq-suite: port $port on 127.0.0.1 is already in use; go-nsq's tests need it" >&2
		exit 1
	fi
done

go build -o "$work/bin/" ./apps/nsqd ./apps/nsqlookupd
dir=$(go mod download -json "github.com/nsqio/go-nsq@$GONSQ_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
cp -r "$dir" "$work/go-nsq"
chmod -R u+w "$work/go-nsq"
mkdir -p "$work/data"

"$work/bin/nsqlookupd" --broadcast-address=127.0.0.1 --tcp-address=127.0.0.1:4160 --http-address=127.0.0.1:4161 \
	>"$work/nsqlookupd.log" 2>&1 &
pids+=($!)
(cd "$work/go-nsq" && exec "$work/bin/nsqd" --data-path="$work/data" --broadcast-address=127.0.0.1 \
	--tcp-address=127.0.0.1:4150 --http-address=127.0.0.1:4151 --https-address=127.0.0.1:4152 \
	--lookupd-tcp-address=127.0.0.1:4160 \
	--tls-cert=./test/server.pem --tls-key=./test/server.key --tls-root-ca-file=./test/ca.pem \
	>"$work/nsqd.log" 2>&1) &
pids+=($!)

for i in $(seq 1 100); do
	if curl -fsS http://127.0.0.1:4151/ping >/dev/null 2>&1 && curl -fsS http://127.0.0.1:4161/ping >/dev/null 2>&1; then
		break
	fi
	sleep 0.1
done

echo "== go-nsq $GONSQ_VERSION test suite against Sluice =="
status=0
(cd "$work/go-nsq" && GOFLAGS=-mod=mod go test -v -count=1 -timeout 120s .) >"$work/gonsq.out" 2>&1 || status=$?
grep -E '^(--- |ok|FAIL|PASS)' "$work/gonsq.out" || true
if [ "$status" -ne 0 ]; then
	cat "$work/gonsq.out"
	echo "--- nsqd log (tail) ---"; tail -50 "$work/nsqd.log"
	echo "--- nsqlookupd log (tail) ---"; tail -20 "$work/nsqlookupd.log"
fi
passed=$(grep -c '^--- PASS' "$work/gonsq.out" || true)
failed=$(grep -c '^--- FAIL' "$work/gonsq.out" || true)
echo "gonsq: $passed passed, $failed failed"
exit "$status"
