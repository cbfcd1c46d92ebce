#!/usr/bin/env bash
# Fuzzes the running worker against its own OpenAPI document with Schemathesis:
# generated requests (valid and invalid) on every documented operation, checked
# for server errors (any 5xx), undocumented status codes, content types and
# headers, responses that break their schema, invalid input that is accepted,
# and routes that ignore the bearer token. A fixed seed and a bounded number of
# cases per operation keep the run reproducible and a few minutes long at most.
#
# The worker runs a tiny random-weight model with --api-token on 127.0.0.1 and
# is stopped on exit.
#
#   scripts/test-openapi-fuzz.sh            (SD_WORKER_FUZZ_EXAMPLES, SD_WORKER_FUZZ_SEED to change the run)
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/setup-fuzz.sh | grep '^SD_WORKER_ST=')"

# shellcheck source=lib/workers.sh
source scripts/lib/workers.sh
setup_workers fuzz
TOKEN="fuzz-token"
# A ControlNet and a depth model of our own, so every preprocessor and unit
# runs without the network.
"$WORKER" generate-controlnet --shape tiny --out "$WORK/tiny-canny" >/dev/null
"$WORKER" generate-depth-model --out "$WORK/depth" >/dev/null
start_worker fuzz "$WORK/model" --api-token "$TOKEN" --queue-size 4 \
    --controlnet "$WORK/tiny-canny" --depth-model "$WORK/depth"
URL="$(cat "$WORK/fuzz.url")"

echo "==> schemathesis against $URL/openapi.json"
status=0
# From the temp folder: Schemathesis keeps state in the working directory.
cd "$WORK"
"$SD_WORKER_ST" --no-color run "$URL/openapi.json" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,ignored_auth \
    --phases examples,coverage,fuzzing,stateful \
    --seed "${SD_WORKER_FUZZ_SEED:-20261130}" \
    --max-examples "${SD_WORKER_FUZZ_EXAMPLES:-40}" \
    --workers 2 \
    --request-timeout 30 \
    --suppress-health-check too_slow \
    --generation-database none || status=$?
if ! kill -0 "${PIDS[0]}" 2>/dev/null; then
    echo "the worker died during the fuzzing run:" >&2
    cat "$WORK/fuzz.err" >&2
    exit 1
fi
exit "$status"
