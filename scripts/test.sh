#!/usr/bin/env bash
# The project's one test command (make test, .ci/run): installs what is
# missing, checks formatting, modules, generated code and vet, then runs
# every test with -race. A missing tool is a loud failure, never a skip.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

step "tools"
need go || { echo "go is required (1.26+)" >&2; exit 1; }
if ! need node || ! need npm; then
  echo "node and npm are required for the interop suite; installing them with apt-get" >&2
  as_root apt-get update -q && as_root apt-get install -y -q nodejs npm
fi
if ! need redis-server || ! need redis-cli; then
  echo "redis-server is missing; installing it with apt-get" >&2
  as_root apt-get update -q && as_root apt-get install -y -q redis-server
  # Tests start their own redis-server processes; the packaged service is not needed.
  (as_root systemctl disable --now redis-server >/dev/null 2>&1 || as_root service redis-server stop >/dev/null 2>&1 || true)
fi
if ! need chromium; then
  echo "chromium is missing (the interop browser test drives it headless); installing it with apt-get" >&2
  as_root apt-get update -q && as_root apt-get install -y -q chromium
fi
go version; node --version; redis-server --version | head -1; chromium --version

step "npm ci (pinned @microsoft/signalr client)"
# node_modules/.hubfabric-lock records the lockfile the last npm ci installed.
if [ ! -d node_modules ] || ! cmp -s package-lock.json node_modules/.hubfabric-lock 2>/dev/null; then
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.hubfabric-lock
fi

step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*'))
if [ -n "$unformatted" ]; then echo "gofmt would change:" >&2; echo "$unformatted" >&2; exit 1; fi

step "go mod tidy is a no-op"
cp go.mod /tmp/hubfabric.go.mod.$$; cp go.sum /tmp/hubfabric.go.sum.$$
go mod tidy
if ! cmp -s go.mod /tmp/hubfabric.go.mod.$$ || ! cmp -s go.sum /tmp/hubfabric.go.sum.$$; then
  diff -u /tmp/hubfabric.go.mod.$$ go.mod || true
  cp /tmp/hubfabric.go.mod.$$ go.mod; cp /tmp/hubfabric.go.sum.$$ go.sum
  echo "go.mod/go.sum are not tidy: run go mod tidy and commit" >&2; exit 1
fi
rm -f /tmp/hubfabric.go.mod.$$ /tmp/hubfabric.go.sum.$$

step "generated code is current (buf lint + generate)"
bash scripts/gen-proto.sh
if ! git diff --quiet -- proto; then
  git --no-pager diff --stat -- proto
  echo "regenerating the protobuf code changed it: run scripts/gen-proto.sh and commit" >&2; exit 1
fi

step "go vet"
go vet ./...

step "the server binary does not link the testkit"
if go list -deps ./cmd/node | grep -q '/testkit$'; then
  echo "cmd/node imports the testkit (simulator, redis-server runner): keep it in cmd/scenario" >&2; exit 1
fi

step "fuzz targets, briefly (a new target must be listed here)"
# Each decoder of outside bytes has a fuzz target; each runs for
# FUZZTIME executions (default 1000x) from its seeds and testdata/fuzz
# corpus. A count, not a duration: Go 1.26's fuzz coordinator can fail a
# target with a bare "context deadline exceeded" when a -fuzztime duration
# ends while a worker is busy (golang/go#75804, fixed in Go 1.27), which a
# loaded machine makes likely. A target found in the code but not listed,
# or listed but gone, fails the step.
fuzz_targets="
actors:FuzzHandleMessage actors:FuzzHandleMessageRouting actors:FuzzHandleRecords actors:FuzzUnwantedEcho
auth:FuzzHS256
backplane/redis:FuzzParseConnectionString
protocol:FuzzParseJSON protocol:FuzzUnmarshalJSONArgument protocol:FuzzParseMessagePack protocol:FuzzParseHandshakeRequest protocol:FuzzParseNegotiateResponse
internal/conn:FuzzStatefulFrames internal/conn:FuzzRestoreStateful
service:FuzzServiceConnectionString service:FuzzRESTRoute service:FuzzRESTBody service:FuzzServiceCommand service:FuzzUpstreamResult service:FuzzAccessToken
cmd/loadgen:FuzzBacklogParse
transport:FuzzTokenClaim transport:FuzzReadFrame transport:FuzzReadHandshake transport:FuzzCheckOrigin transport:FuzzNegotiate transport:FuzzHTTPSend transport:FuzzQueryValue
"
found=$(grep -rhoE --include='*_test.go' --exclude-dir=node_modules '^func Fuzz[A-Za-z0-9_]+' . | sed 's/^func //' | sort)
listed=$(for pt in $fuzz_targets; do echo "${pt##*:}"; done | sort)
if [ "$found" != "$listed" ]; then
  diff <(echo "$listed") <(echo "$found") || true
  echo "the fuzz targets in the code (right) differ from those listed in scripts/test.sh (left)" >&2; exit 1
fi
for pt in $fuzz_targets; do
  go test -run '^$' -fuzz "^${pt##*:}\$" -fuzztime "${FUZZTIME:-1000x}" "./${pt%%:*}" >/tmp/hubfabric-fuzz.$$.log 2>&1 ||
    { cat /tmp/hubfabric-fuzz.$$.log; rm -f /tmp/hubfabric-fuzz.$$.log; echo "fuzz target ${pt##*:} (./${pt%%:*}) failed" >&2; exit 1; }
  echo "ok ${pt##*:} $(grep -o 'execs: [0-9]*' /tmp/hubfabric-fuzz.$$.log | tail -1)"
done
rm -f /tmp/hubfabric-fuzz.$$.log

step "go test -race"
go test -race -count=1 -timeout 15m ./... 2>&1 | tee /tmp/hubfabric-test.$$.log
status=${PIPESTATUS[0]}
passed=$(grep -c '^ok ' /tmp/hubfabric-test.$$.log || true)
failed=$(grep -c '^FAIL' /tmp/hubfabric-test.$$.log || true)
rm -f /tmp/hubfabric-test.$$.log
echo "packages: $passed passed, $failed failed"
exit "$status"
