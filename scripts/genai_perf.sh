#!/usr/bin/env bash
# Run NVIDIA's genai-perf (an LLM benchmark that drives perf_analyzer) with every argument passed
# through unchanged, e.g. against the generator (README, "Load tests", "genai-perf"):
#   bash scripts/genai_perf.sh profile -m generator --endpoint-type kserve --backend tensorrtllm \
#     --streaming -u localhost:8001 --tokenizer models/generator --synthetic-input-tokens-mean 32 \
#     --output-tokens-mean 64 --concurrency 4 --measurement-interval 5000 \
#     --artifact-dir runs/genai-perf -H "triton-grpc-protocol-admin-key:$SCAFFOLDING_ADMIN_KEY"
#
# genai-perf is installed once, pinned (genai-perf==$GP_VERSION and each of its dependencies at
# the version in LOCK below), into its own virtual environment under
# ${SCAFFOLDING_CACHE:-$HOME/.cache/triton-scaffolding}/genai_perf/ (about 950 MB). It never
# touches the project's .venv, which must keep numpy<2 for the Triton Python stub, while
# genai-perf brings numpy 2, pandas 3, pyarrow and its own transformers. With CPython 3.11 on
# x86_64 (what scripts/setup.sh uses) every wheel is hash-checked against LOCK; elsewhere the same
# versions are installed without hashes. $PYTHON picks the interpreter (default python3.11).
#
# genai-perf starts `perf_analyzer` by name from PATH. This script puts a shim directory first on
# PATH whose perf_analyzer runs scripts/perf_analyzer.sh ($PERF_ANALYZER, a perf_analyzer on PATH
# that runs, or the pinned perf-analyzer wheel under Debian trixie's loader where glibc is too
# old, as that script explains) with PATH as it was before the shim was added, so that script
# cannot find the shim again and recurse.
#
# The first run needs the network (PyPI); later runs use the cache. Each piece is built in a
# temporary directory and renamed into place, so an interrupted run leaves nothing half-made and
# two runs may race.
set -euo pipefail

GP_VERSION=0.0.16
REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SCAFFOLDING_CACHE:-${HOME:?HOME is not set; set SCAFFOLDING_CACHE}/.cache/triton-scaffolding}/genai_perf

# shellcheck source=messages.sh
. "$REPO_ROOT/scripts/messages.sh"

# genai-perf 0.0.16 and everything it needs, resolved by pip on Linux x86_64 / CPython 3.11; the
# hashes are those of the cp311 manylinux x86_64 (or pure-Python) wheels on PyPI. perf-analyzer
# 0.1.0 is PyPI's empty placeholder that pip picks where glibc < 2.38: genai-perf only needs the
# binary, which the shim provides.
LOCK='alembic==1.20.1 --hash=sha256:9970712cfb81ea26c8658d378aaa5b8f6ff9146e5bb111d70497c164016cf598
annotated-doc==0.0.7 --hash=sha256:6bc31bbbec6dfaaedc1676dbc11dbda96fe22a2b5c400e9ebad113fec44a9dc6
annotated-types==0.8.0 --hash=sha256:f072f4d804ea359e4eaf198b1af7a8b0943881a87f31bb764f8bf219bb9419e0
anyio==4.16.0 --hash=sha256:c66ae634e0b8228396b801741beb3294326d4b6102f7bba4041c0dfb58c29026
certifi==2026.10.19.post1 --hash=sha256:1324c476b4811eff41a8bc2122cd0bbd4d9c7234c725446d99ab1612b3a7fdd2
cffi==2.1.1 --hash=sha256:34e261f78cb6ceaaa36f42f2613f4380d94d9c759a9c73c769ee6e0247364632
charset-normalizer==3.5.3 --hash=sha256:2a6f937e0b70133d1f826d0a253331b6fe1a4c874808cc12e16f2fb8177042f4
choreographer==1.4.0 --hash=sha256:8acba7ce8e912e1193628eea5bbfd76ac3d63328e3195b2527c04675f16780f7
click==8.5.1 --hash=sha256:8bb5376d2006950386f8c6427613334a2acadc5f559cb80e638d00b4df957e37
colorlog==6.12.0 --hash=sha256:30d392604e9110045a2c2aeefc27d7a017abbab63f3a8aee594eac0801df784e
cramjam==2.14.0 --hash=sha256:401bf7e11cf3775ee4af0fb487027adcbee61f68bbd1944ae9f6fcafb8b160fc
fastparquet==2026.9.0 --hash=sha256:1056e8aea71bd2f2aee00e4cf2711dc4377a6c2654d655d8faeab76e2e3cde31
filelock==4.3.1 --hash=sha256:79e43df8e9fe509cd83a3899a7c186c8077cbbe4d200a1ed3705c2f3bb6bc487
formulaic==1.2.2 --hash=sha256:0f84ff49e3fc9dc0e68ab08a0a9427874021aa6c558e66b44dc634a35739b09b
fsspec==2026.9.0 --hash=sha256:8dd6e646e99ea382bd85f97a45e6b526a442d79423a7dc673f1e2756d05fcb5f
genai-perf==0.0.16 --hash=sha256:352a949bf06f92a7a2232ede44d59b9386b82e150e10548a80e71bf0ccb08654
h11==0.16.0 --hash=sha256:63cf8bbe7522de3bf65932fda1d9c2772064ffb3dae62d55932da54b31cb6c86
hf-xet==1.8.0 --hash=sha256:29dab7c904cd1914a0439c6e1306c12c7497c8bd32290fbe563ebf51ca4b6d6d
httpcore2==2.16.2 --hash=sha256:16051ae2a42f776007543f32de9349a317b23d2cbb4e1456b4bac0e88b87419a
httpx2==2.16.2 --hash=sha256:f05c13aade4c45dbf1c9060647a1058f0acad62398fad96e741269edb33d46f5
huggingface-hub==2.4.0 --hash=sha256:42ecfd93ede47bdd333daebbf66a32d7bfe2e18752754fe4d2d4f98a0179d801
idna==3.20 --hash=sha256:ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c
iniconfig==2.3.1 --hash=sha256:9121e2c1fdb355232495be3194c8dfe87ccc2d5dee45947b78e68f499790d7a7
interface-meta==2.0.1 --hash=sha256:f38016bef9a4429b6d0792d809be7b65e9781820c674bf7f463999086b6e6323
jinja2==3.1.6 --hash=sha256:85ece4451f492d0c13c5dd7c13a64681a86afae63a5f347908daf103ce6d2f67
kaleido==1.5.0 --hash=sha256:de301b73cc9fd6311e54b47087d3a7a5da3b7681ee9175e23b45dcffb4432ff2
logistro==2.0.1 --hash=sha256:06ffa127b9fb4ac8b1972ae6b2a9d7fde57598bf5939cd708f43ec5bba2d31eb
mako==1.4.3 --hash=sha256:723296007c870bfd6b3f0c3230dba7198096e5269297ebf5e4eff9e7ffa39d4f
markdown-it-py==4.3.0 --hash=sha256:7aa1511a46c39138de78d9eba92ce47e63124d8003fc98b3a351909e04239efa
markupsafe==3.0.4 --hash=sha256:6da83a088f8ef93b2d483a8232a4dbf4d69d3d8496b568a03c56becac43e1808
mdurl==0.1.2 --hash=sha256:84008a41e51615a49fc9966191ff91509e3c40b939176e643fd50a5c2196b8f8
narwhals==2.29.0 --hash=sha256:1c69b3dc30240f6e848c5a673cafc86affa44184ecce721e25b7194663ad10dc
numpy==2.4.6 --hash=sha256:89cd468399cfd2504718f0ba50e410dca55a170b61a02ad92bb18c8a65186e93
optuna==3.6.1 --hash=sha256:b32e0490bd6552790b70ec94de77dd2855057c9e229cd9f4da48fe8a31c7f1cc
orjson==3.13.0 --hash=sha256:89bcf2d4bc6c9a7e1763c8cf534f38712e66b76a0fefda7fb7785462f0d635e4
packaging==26.4 --hash=sha256:81383611a09c1bc0b08b76e0fd5829d7c6824c65b27a6aee339da133f4233ea2
pandas==3.1.1 --hash=sha256:4f1602f614bb83f443381dbcbb94c4ac764b2e50c8d6c965614c5cd83e328c47
patsy==1.0.3 --hash=sha256:d3dbebe8fd5f46e29912d030b63c6268647b59bf788a99e2af28a30234cf357c
perf-analyzer==0.1.0 --hash=sha256:3c7d7b790b0fbcfcd478063f7d1450dbaa5e71c127a25ee810841d1a06bc5748
pillow==13.0.0 --hash=sha256:a625df9a2a5597fa5e5266e01aefc82604bb85d291e3547981e863560d75da6c
platformdirs==4.14.8 --hash=sha256:1e34af590de4d978631b751eb2202f2fee4497537a17c1720b12fcf57b331392
plotly==7.1.0 --hash=sha256:dbb7fa18afce40d0a8e80d1bf162eceb3faa0ce5a77fe741ad09a74cf78f53f3
pluggy==1.7.0 --hash=sha256:7dd7b0d8832ba3cb632c306926ded123429211b83641b35dc5c41ad2d34f9bec
pyarrow==26.0.1 --hash=sha256:39cb0f2418282c24bea6ceda77b03e5a8f0a5766b63a8bf194d4e2a2c423548c
pycparser==3.12 --hash=sha256:a076f3f489b39b43ed13563a1dafe42447445bec2e294154ec5c57fcdda4c85e
pydantic==2.14.4 --hash=sha256:653a2ad9f6d8858529c77c72717d0ea991d6c6837fe683246b2f4b2bbfc3fadc
pydantic-core==2.50.5 --hash=sha256:488319076ec92908b91fc6265ce761f1d78748f69f85518564fd16bf333e1b70
pygments==2.21.0 --hash=sha256:2363c69b61c4a97c838da3b130dcd6468f4848992b21a82f2a63ec34377137d9
pytest==9.2.0 --hash=sha256:07acdcf88ec174f907dc01af70bf52d49b014bbab03faeeade31c96b18c2e588
pytest-mock==3.17.0 --hash=sha256:1b82aa4b37137248bd687055e109723debeb07b489de1565297dc9589c5f2d6b
python-dateutil==4.0.0 --hash=sha256:a5e246f79eb80475e691bf93862cead98decd8a498cf53ba0516fcdc0f50dc1c
pyyaml==6.0.4 --hash=sha256:622aa875fa6533f25fedcffe23079357d65a690d462200afed5d8e9d0e01ebee
regex==2026.11.19 --hash=sha256:86d3b2ea69b3c56df3e8ddbac6cd98eaf5a8c5b5e7e006897ebdf7a28d6818e6
requests==2.34.2 --hash=sha256:2a0d60c172f83ac6ab31e4554906c0f3b3588d37b5cb939b1c061f4907e278e0
responses==0.26.3 --hash=sha256:74474f799334ac4f37d93b6437ecc3bb1bb5c77a8d31780a338643be2dce0af8
rich==15.0.0 --hash=sha256:33bd4ef74232fb73fe9279a257718407f169c09b78a87ad3d296f548e27de0bb
safetensors==0.8.0 --hash=sha256:fd6f3f93c9a0a7cc2788ee63fb763353d4bd2e89b0751bc78fcf7dda00bea774
scipy==1.17.1 --hash=sha256:43af8d1f3bea642559019edfe64e9b11192a8978efbd1539d7bc2aaa23d92de4
shellingham==1.5.4 --hash=sha256:7ecfff8f2fd72616f7481040475a65b2bf8af90a56c89140852d1120324e8686
simplejson==4.3.0 --hash=sha256:06306ed92b3860802ad9dd7fe88f122a7360b01e3936b8a355d6d689bb2bb774
soundfile==0.14.0 --hash=sha256:1e38bac1853412871318e82a1ba69a8be677619b56025bbfcccdb41b6cafe82d
sqlalchemy==2.1.9 --hash=sha256:3a24b459e52b3ac138f6a05e99a4bd0589443a1ae18041a59c1cfdee12134a2b
statsmodels==0.15.0 --hash=sha256:b67886b66d9c7ca118526accedb5c6de7ffd74c015dc0492ea0b1690192b65da
tokenizers==0.23.3 --hash=sha256:376851d22bcf9d650a5c3090bb83e6cf9e895fbf0595369fa4cd43c1f69b5f87
tqdm==4.70.1 --hash=sha256:c293e525e6fef9c20e8728fd4612df02a0aa31bb5fe91ecd93e123b1b7bffa73
transformers==5.24.0 --hash=sha256:ff5ebedf9359f94bb63772b6380eba6e7104d010cbbb2cb82c788817ea7486f6
truststore==0.10.5 --hash=sha256:9aaaedaefaf06d8b206278cf8b5012bc897f485a874503501e12d776df78951c
typer==0.29.2 --hash=sha256:f30731f8ca758368b836b3714872e58e395cef8fcaff918c853b1969ed5274e7
typing-extensions==4.16.0 --hash=sha256:481caa481374e813c1b176ada14e97f1f67a4539ce9cfeb3f350d78d6370c2e8
typing-inspection==0.4.5 --hash=sha256:bc210535442b39e1bf2805e0c7a17dfd6a4ace760c84c7f7d16245d23a6b1c39
tzdata==2026.6 --hash=sha256:0a10eec6e13ef16b627fabed9a5f2ba61a62b1c67f327305f4e7e412a70b4aec
urllib3==2.8.0 --hash=sha256:0cf3cae568d36aa9576b28dfb35f11328f1cb974ca7647d9475ebb86c75ac6e3
wrapt==2.5.2 --hash=sha256:0743950d3dda9940e56f81f5334ba051c4fe2e1421e4e4a4ef8eb8fb86a90894'

# genai-perf runs `perf_analyzer` by name from PATH; this shim, put first on PATH, runs
# scripts/perf_analyzer.sh with PATH as it was before, so that script cannot find the shim again
SHIM='#!/usr/bin/env bash
# perf_analyzer for genai-perf, written by scripts/genai_perf.sh: runs scripts/perf_analyzer.sh
# with PATH as it was before this directory was put first, so that script cannot find this shim.
set -euo pipefail
: "${SCAFFOLDING_GENAI_PERF_PA_SCRIPT:?this shim is run by scripts/genai_perf.sh, which sets it}"
if [ -n "${SCAFFOLDING_GENAI_PERF_IN_SHIM:-}" ]; then
  echo "perf_analyzer shim: error: called itself again; remove $(dirname "$0") from PATH." >&2
  exit 1
fi
export SCAFFOLDING_GENAI_PERF_IN_SHIM=1
PATH=${SCAFFOLDING_GENAI_PERF_OUTER_PATH:?this shim is run by scripts/genai_perf.sh, which sets it} \
  exec bash "$SCAFFOLDING_GENAI_PERF_PA_SCRIPT" "$@"'

# a Python >= 3.10 with venv: $PYTHON, else python3.11 (the project's), else python3
python=${PYTHON:-}
if [ -z "$python" ]; then
  if command -v python3.11 >/dev/null 2>&1; then python=python3.11; else python=python3; fi
fi
command -v "$python" >/dev/null 2>&1 || die "no Python found ('$python'); set PYTHON to a Python >= 3.10."
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null) \
  || die "'$python' does not run; set PYTHON to a Python >= 3.10."
"$python" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))' \
  || die "genai-perf $GP_VERSION needs Python >= 3.10, '$python' is $pyver; set PYTHON to a newer one."
arch=$(uname -m)
if [ "$pyver" = 3.11 ] && [ "$arch" = x86_64 ]; then hashed=1; else hashed=0; fi
venv=$CACHE/venv-$GP_VERSION-py$pyver-$arch-$(printf '%s' "$LOCK" | sha256sum | cut -c1-10)
shim_dir=$CACHE/shim-$(printf '%s' "$SHIM" | sha256sum | cut -c1-10)

temporaries=()
trap 'for t in ${temporaries[@]+"${temporaries[@]}"}; do rm -rf "$t"; done' EXIT
new_temporary() {  # sets $tmp: a fresh directory inside the cache, removed on exit
  mkdir -p "$CACHE" || die "cannot create the cache directory $CACHE (set SCAFFOLDING_CACHE to a writable place)."
  tmp=$(mktemp -d "$CACHE/.tmp.XXXXXX") || die "cannot create a directory in $CACHE."
  temporaries+=("$tmp")
}
publish() {  # rename a finished temporary into place; a concurrent run that got there first wins
  mv -T "$1" "$2" 2>/dev/null || [ -d "$2" ] || die "cannot move $1 to $2."
  rm -rf "$1"
}

# --- the virtual environment ------------------------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  note "installing genai-perf==$GP_VERSION and its dependencies into $venv (about 950 MB; once) ..."
  new_temporary
  "$python" -m venv "$tmp/venv" > "$tmp/venv.log" 2>&1 || {
    cat "$tmp/venv.log" >&2
    die "'$python -m venv' failed (output above); on Debian/Ubuntu install python$pyver-venv, or set PYTHON."
  }
  if [ "$hashed" = 1 ]; then
    printf '%s\n' "$LOCK" > "$tmp/requirements.txt"
    pip_args=(--require-hashes --no-deps -r "$tmp/requirements.txt")
  else
    note "Python $pyver on $arch: the lock's hashes are for CPython 3.11 on x86_64, so the same versions are installed without hash checks."
    printf '%s\n' "$LOCK" | sed 's/ --hash=.*//' > "$tmp/constraints.txt"
    pip_args=(-c "$tmp/constraints.txt" "genai-perf==$GP_VERSION")
  fi
  if ! "$tmp/venv/bin/python" -m pip install --disable-pip-version-check --no-input --only-binary=:all: \
    "${pip_args[@]}" > "$tmp/pip.log" 2>&1; then
    tail -n 40 "$tmp/pip.log" >&2
    die "could not install genai-perf==$GP_VERSION from PyPI (last lines of pip's output above)."
  fi
  # console scripts in bin/ carry the temporary path in their #! line; this script runs
  # `bin/python -m genai_perf.main` instead, which keeps working after the rename
  "$tmp/venv/bin/python" -m genai_perf.main --version > "$tmp/check.log" 2>&1 || {
    cat "$tmp/check.log" >&2
    die "genai-perf $GP_VERSION was installed but does not start (output above)."
  }
  publish "$tmp/venv" "$venv"
  note "ready: $(du -sh "$venv" | cut -f1) in $venv"
fi

# --- the perf_analyzer shim -------------------------------------------------------------------
if [ ! -x "$shim_dir/perf_analyzer" ]; then
  new_temporary
  printf '%s\n' "$SHIM" > "$tmp/perf_analyzer" && chmod 755 "$tmp" "$tmp/perf_analyzer" \
    || die "cannot write $tmp/perf_analyzer."
  publish "$tmp" "$shim_dir"
fi

export SCAFFOLDING_GENAI_PERF_PA_SCRIPT=$REPO_ROOT/scripts/perf_analyzer.sh
export SCAFFOLDING_GENAI_PERF_OUTER_PATH=$PATH
case "${1:-}" in
  "" | -h | --help | --version) ;;
  *)
    # fetch or check perf_analyzer now, with its own messages, rather than deep inside genai-perf
    pa_out=$(bash "$SCAFFOLDING_GENAI_PERF_PA_SCRIPT" --version 2>&1) || true
    [[ $pa_out == *"Perf Analyzer Version"* ]] || {
      printf '%s\n' "$pa_out" >&2
      die "perf_analyzer does not run (output of 'bash scripts/perf_analyzer.sh --version' above); genai-perf needs it."
    }
    ;;
esac
for t in ${temporaries[@]+"${temporaries[@]}"}; do rm -rf "$t"; done  # exec skips the EXIT trap
export PATH=$shim_dir:$PATH
exec "$venv/bin/python" -m genai_perf.main "$@"
