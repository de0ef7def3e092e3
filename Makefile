# make test  — everything CI runs (installs missing tools, checks, -race tests)
# make run   — a node on :8080 with the in-memory backplane and hub "chat"
.PHONY: test run proto

test:
	bash scripts/test.sh

run:
	go run ./cmd/node

proto:
	bash scripts/gen-proto.sh
