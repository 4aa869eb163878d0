#!/usr/bin/env bash
# Issue 24's probes, run against the current build: one markdown row each, "| probe | exit | stderr |" (every stderr
# line joined by " / ", so a second line shows), for the README's robustness table. Each probe runs with no interpreter
# (HARNESS_PYTHON=/nonexistent: nothing may get as far as the reference) and a 60 s limit ("hung" if it takes longer).
# `--live` adds the HF hub snapshot probe, which compares for real (needs the reference interpreter in HARNESS_PYTHON).
#
#   dotnet build Harness.sln -c Release && tests/E2E/probes.sh [--live]
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
dll=${HARNESS_DLL:-$root/src/Harness/bin/Release/net10.0/harness.dll}
live=${1:-}
live_python=${HARNESS_PYTHON:-$HOME/.cache/harness/reference-python}
work=$(mktemp -d /tmp/harness-probes.XXXXXX)
trap 'umount "$work/romnt" 2>/dev/null; rm -rf "$work"' EXIT
tiny=$root/fixtures/models/tiny-llama-fp32

model() {   # a copy of the tiny Llama: model NAME
    mkdir -p "$work/$1" && cp "$tiny"/* "$work/$1/" && echo "$work/$1"
}

probe() {   # probe "what" args...
    local what=$1; shift
    local err code
    err=$(cd "$work" && CI=true HARNESS_PYTHON=/nonexistent/python HARNESS_CACHE=/nonexistent timeout 60 dotnet "$dll" "$@" 2>&1 >/dev/null)
    code=$?
    [ "$code" = 124 ] && err="hung (killed after 60 s)"
    err=${err//$work/DIR}
    err=${err//$root/REPO}
    err=$(printf '%s' "$err" | sed -e 's/|/\\|/g' | paste -sd '\a' | sed -e 's/\a/ \/ /g')
    printf '| %s | %s | `%s` |\n' "$what" "$code" "$err"
}

echo "| probe | exit | stderr (every line; DIR the probe's folder, REPO the repository) |"
echo "|---|---|---|"
probe '`run --report ""`' run --offline llama/tp1/input-ids/fp32 --report ""
probe '`report --out ""`' report --from /dev/null --out ""
mkdir -p "$work/good" && (cd "$work" && CI=true dotnet "$dll" run --offline llama/tp1/input-ids/fp32 --report "$work/good" >/dev/null 2>&1)
good=$work/good/report.json
echo x > "$work/afile"
probe '`report --out FILE`' report --from "$good" --out "$work/afile"
probe '`report --out /dev/null`' report --from "$good" --out /dev/null
mkdir -p "$work/romnt" && if mount --bind "$work/romnt" "$work/romnt" 2>/dev/null && mount -o remount,bind,ro "$work/romnt" 2>/dev/null; then
    probe '`report --out` a read-only folder (a read-only bind mount: root writes through chmod)' report --from "$good" --out "$work/romnt"
    umount "$work/romnt"
else
    mkdir -p "$work/ro" && chmod 555 "$work/ro"
    probe '`report --out` a read-only folder (chmod 555)' report --from "$good" --out "$work/ro"
fi
probe '`report --out /proc/version/x` (a folder that cannot be made)' report --from "$good" --out /proc/version/x
probe '`run --offline ... --report` an unwritable folder' run --offline llama/tp1/input-ids/fp32 --report /proc/version/x
probe '`report --from /dev/zero`' report --from /dev/zero --out "$work/o"
d=$(model zero) && rm "$d/config.json" && ln -s /dev/zero "$d/config.json"
probe 'config.json a link to `/dev/zero`' compare --model "$d"
d=$(model loop) && rm "$d/config.json" && ln -s other.json "$d/config.json" && ln -s config.json "$d/other.json"
probe 'config.json a loop of links' compare --model "$d"
d=$(model fifo) && rm "$d/config.json" && mkfifo "$d/config.json"
probe 'config.json a FIFO' compare --model "$d"
d=$(model fifo-weights) && rm "$d/model.safetensors" && mkfifo "$d/model.safetensors"
probe 'model.safetensors a FIFO' compare --model "$d"
d=$(model fifo-tokenizer) && mkfifo "$d/tokenizer.json"
probe 'tokenizer.json (or any file beside the weights) a FIFO' compare --model "$d" --text hello
d=$(model huge) && truncate -s 200M "$d/config.json"
probe 'config.json of 200 MB' compare --model "$d"
mkfifo "$work/prompts.txt"
probe '`judge --prompts` a FIFO' judge --endpoint http://127.0.0.1:9 --model "$(model judged)" --prompts "$work/prompts.txt"
mkfifo "$work/model.gguf"
probe '`judge --gguf` a FIFO' judge --gguf "$work/model.gguf" --model "$(model judged-gguf)" --ids 1,2
for g in NaN 0 -1; do probe "\`report --growth-factor $g\`" report --from "$good" --out "$work/o" --growth-factor "$g"; done
probe '`compare --tp abc`' compare --model "$tiny" --tp abc
d=$(model trainer) && sed -i 's/"LlamaForCausalLM"/"Trainer"/' "$d/config.json"
probe '`architectures: ["Trainer"]`' compare --model "$d"
probe '`compare --prompt-length 600` on a 256-position model' compare --model "$tiny" --prompt-length 600
for m in tiny-gemma3n-fp32:93 tiny-gemma4-e2b-like-fp32:253 tiny-qwen2-vl-fp32:251; do
    probe "\`compare --prompt-length ${m#*:}\` on ${m%%:*}" compare --model "$root/fixtures/models/${m%%:*}" --prompt-length "${m#*:}"
done
d=$(model long) && sed -i 's/"max_position_embeddings": 256/"max_position_embeddings": 2000000/' "$d/config.json"
probe '`--prompt-length 1000000` where the positions allow it' compare --model "$d" --prompt-length 1000000
probe 'a model over `--max-memory`' compare --model "$tiny" --max-memory 0.25
d=$(model $'escape\a') && sed -i 's/"model_type": "llama"/"model_type": "lla\\u001b[31mma\\u0007"/' "$d/config.json"
probe 'ESC and BEL in `model_type` and the folder name' compare --model "$d"

if [ "$live" = --live ]; then
    # an HF hub snapshot: files are relative links into ../../blobs
    hub=$work/hub/models--tiny--llama
    mkdir -p "$hub/blobs" "$hub/snapshots/rev"
    for f in "$tiny"/*; do
        b=$(sha256sum "$f" | cut -c1-16); cp "$f" "$hub/blobs/$b"; ln -s "../../blobs/$b" "$hub/snapshots/rev/$(basename "$f")"
    done
    before=$(ls "$HOME/.cache/harness/forky/tmp/harness" 2>/dev/null | wc -l)
    out=$(cd "$work" && CI=true HARNESS_PYTHON=$live_python timeout 600 dotnet "$dll" compare --model "$hub/snapshots/rev" 2>&1)
    code=$?
    after=$(ls "$HOME/.cache/harness/forky/tmp/harness" 2>/dev/null | wc -l)
    printf '| HF hub snapshot (relative links into `../../blobs`) | %s | `%s`; the chroot'"'"'s /tmp/harness held %s entries before, %s after |\n' \
        "$code" "$(printf '%s' "$out" | grep -m1 'comparison:')" "$before" "$after"
fi
