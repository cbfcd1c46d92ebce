#!/usr/bin/env bash
# Writes the installable npm tarballs of @sd-worker/sdk and @sd-worker/react:
#
#   scripts/pack.sh [--no-build] [OUT_DIR]     (OUT_DIR: dist/npm by default)
#
# Builds the WASM SDK (scripts/build-wasm.sh) and both packages (tsc) unless
# --no-build says they are built already, then `pnpm pack`s each package:
# pnpm writes the real version for `workspace:^` in the tarball's
# package.json, which this script checks, with the files (the wasm in, no
# tests). Then `npm publish --dry-run` of each tarball must pass without a
# warning. Prints the tarballs, their sizes and the gzipped size of what an
# app downloads (wasm + JS). Safe to run again: OUT_DIR's tarballs are
# replaced.
#
# Install them with plain npm, e.g. `npm install ./dist/npm/sd-worker-sdk-0.1.0.tgz
# ./dist/npm/sd-worker-react-0.1.0.tgz` (scripts/test-install.sh does, in a fresh
# Vite app). Publishing: `npm publish <tarball>` from CI (publishConfig asks for
# provenance, which needs the repository URL of package.json to be the one CI
# runs in: see README.md, "Install").
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
out="dist/npm"
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        -h | --help)
            sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        -*)
            echo "pack: unknown option $arg" >&2
            exit 2
            ;;
        *) out="$arg" ;;
    esac
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"

if ((build)); then
    echo "==> build the WASM SDK and the packages"
    scripts/build-wasm.sh
    pnpm --filter @sd-worker/sdk --filter @sd-worker/react build
fi
for f in packages/sdk/wasm/sd_worker_sdk_bg.wasm packages/sdk/dist/index.js packages/react/dist/index.js; do
    if [[ ! -f "$f" ]]; then
        echo "pack: $f missing: run without --no-build (or scripts/build-wasm.sh and pnpm build)" >&2
        exit 1
    fi
done

# One tarball per package; the name pnpm gives it is read from its output.
pack() {
    local dir="$1" name version file
    name="$(node -p "require('./$dir/package.json').name")"
    version="$(node -p "require('./$dir/package.json').version")"
    file="$out/$(echo "${name#@}" | tr '/' '-')-$version.tgz"
    rm -f "$file"
    (cd "$dir" && pnpm pack --pack-destination "$out" >/dev/null)
    if [[ ! -f "$file" ]]; then
        echo "pack: pnpm pack did not write $file" >&2
        exit 1
    fi
    echo "$file"
}

echo "==> pnpm pack"
sdk="$(pack packages/sdk)"
react="$(pack packages/react)"

echo "==> check the tarballs"
# The manifest: no workspace: range left, @sd-worker/react depending on this
# @sd-worker/sdk's version; the files: the wasm and its glue, the built JS and
# declarations, no tests.
node - "$sdk" "$react" <<'EOF'
const { execFileSync } = require('node:child_process');
const [sdkTgz, reactTgz] = process.argv.slice(2);
const list = (tgz) => execFileSync('tar', ['-tzf', tgz], { encoding: 'utf8' }).split('\n').filter(Boolean);
const manifest = (tgz) => JSON.parse(execFileSync('tar', ['-xzOf', tgz, 'package/package.json'], { encoding: 'utf8' }));
const fail = (msg) => {
  console.error(`pack: FAIL: ${msg}`);
  process.exit(1);
};
const sdk = manifest(sdkTgz);
const react = manifest(reactTgz);
for (const [tgz, m] of [[sdkTgz, sdk], [reactTgz, react]]) {
  for (const field of ['dependencies', 'peerDependencies', 'optionalDependencies', 'devDependencies']) {
    for (const [dep, range] of Object.entries(m[field] ?? {})) {
      if (String(range).startsWith('workspace:')) fail(`${tgz}: ${field}.${dep} is still ${range}`);
    }
  }
  for (const field of ['repository', 'homepage', 'bugs', 'license', 'engines', 'publishConfig']) {
    if (!m[field]) fail(`${tgz}: package.json has no ${field}`);
  }
  if (!m.repository.directory) fail(`${tgz}: repository.directory missing`);
  const files = list(tgz);
  const tests = files.filter((f) => /(^|\/)(test|e2e)\/|\.test\.|\.tsbuildinfo$/.test(f));
  if (tests.length) fail(`${tgz} holds tests or build state: ${tests.join(', ')}`);
  for (const f of ['package/package.json', 'package/README.md', 'package/dist/index.js', 'package/dist/index.d.ts']) {
    if (!files.includes(f)) fail(`${tgz} lacks ${f}`);
  }
}
const want = `^${sdk.version}`;
if (react.dependencies?.['@sd-worker/sdk'] !== want) {
  fail(`@sd-worker/react depends on @sd-worker/sdk ${react.dependencies?.['@sd-worker/sdk']}, not ${want}`);
}
const sdkFiles = list(sdkTgz);
for (const f of ['sd_worker_sdk.js', 'sd_worker_sdk.d.ts', 'sd_worker_sdk_bg.wasm']) {
  if (!sdkFiles.includes(`package/wasm/${f}`)) fail(`${sdkTgz} lacks wasm/${f}`);
}
console.log(`@sd-worker/react ${react.version} depends on @sd-worker/sdk ${want}; wasm included; no tests`);
EOF

echo "==> npm publish --dry-run"
# Every warning counts: npm warns about fields it would correct, files it
# would leave out, a bad bin or repository. The repository placeholder
# (OWNER) is said separately: a real publish with provenance needs the real
# URL.
for tgz in "$sdk" "$react"; do
    log="$(mktemp)"
    if ! npm publish --dry-run "$tgz" >"$log" 2>&1; then
        cat "$log" >&2
        echo "pack: FAIL: npm publish --dry-run $tgz" >&2
        rm -f "$log"
        exit 1
    fi
    if grep -i '^npm warn' "$log" | grep -v -i 'dry-run\|This command requires you to be logged in' >&2; then
        echo "pack: FAIL: npm publish --dry-run $tgz warns (above)" >&2
        rm -f "$log"
        exit 1
    fi
    grep -E '^npm notice (name|version|filename|package size|unpacked size|total files):' "$log" || true
    rm -f "$log"
done
if tar -xzOf "$sdk" package/package.json | grep -q 'github.com/OWNER/'; then
    echo "pack: note: repository.url is the placeholder github.com/OWNER/sd-worker; set the project's URL in both package.json files before publishing (README.md, Install)"
fi

echo "==> tarballs"
size_of() { wc -c <"$1" | tr -d ' '; }
printf '%-56s %10s\n' "file" "bytes"
for tgz in "$sdk" "$react"; do
    printf '%-56s %10s\n' "$tgz" "$(size_of "$tgz")"
done
# What an app downloads of the SDK: the wasm and the JS modules, gzipped one by one.
tmp="$(mktemp -d)"
tar -xzf "$sdk" -C "$tmp"
tar -xzf "$react" -C "$tmp" --transform 's,^package,react,'
gz_sum() {
    local total=0 f
    for f in "$@"; do total=$((total + $(gzip -9 -c "$f" | wc -c))); done
    echo "$total"
}
shopt -s nullglob
printf '%-56s %10s\n' "@sd-worker/sdk wasm (gzip -9)" "$(gz_sum "$tmp"/package/wasm/*.wasm)"
printf '%-56s %10s\n' "@sd-worker/sdk JS: dist/*.js + wasm glue (gzip -9)" "$(gz_sum "$tmp"/package/dist/*.js "$tmp"/package/wasm/*.js)"
printf '%-56s %10s\n' "@sd-worker/react JS: dist/*.js (gzip -9)" "$(gz_sum "$tmp"/react/dist/*.js)"
rm -rf "$tmp"
