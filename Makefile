# The README's commands. Users on GPU machines: install your CUDA torch build first, or
#   make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Real recorded voices for the demo corpus (Debian packages; see src/hifi_tse/data/real_voices.py).
REAL_VOICE_DEBS := fillets-ng-data-cs fillets-ng-data-nl alsa-utils
# More real voices (src/hifi_tse/data/sources/): downloaded and unpacked into
# $(REAL_VOICES_DIR) without their dependencies (game engines, speech synthesisers, Qt), so no
# root is needed; about 680 MB to download and 890 MB unpacked. CI's tests build their own
# fixtures: `.ci/run` passes PACKAGE_VOICE_DEBS= to skip them.
PACKAGE_VOICE_DEBS ?= flight-of-the-amazon-queen beneath-a-steel-sky ktuberling-data \
  klettres-data tuxpaint-stamps-default hedgewars-data festvox-ru kajongg
REAL_VOICES_DIR ?= data/real-voices
# Installed without their dependencies: only their data files are used (the GE2E speaker
# encoder's weights, a two-talker sample call, the DNSMOS ONNX models); hifi-tse loads them
# with its own code.
DATA_WHEELS := resemblyzer==0.1.4 pyannote.audio==4.0.7 speechmos==0.0.1.1

.PHONY: install real-voices test lint demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(DATA_WHEELS)
	touch $(STAMP)

install: $(STAMP)

# Best effort: where apt-get cannot run, the demo says so in one line and uses espeak voices.
real-voices:
	@if ls -d /usr/share/games/fillets-ng/sound/*/cs /usr/share/games/fillets-ng/sound/*/nl \
	    /usr/share/sounds/alsa >/dev/null 2>&1; then \
	  echo "real voices: installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    $(REAL_VOICE_DEBS)) >/dev/null 2>&1 && echo "real voices: installed $(REAL_VOICE_DEBS)" \
	  || echo "real voices: apt-get could not install $(REAL_VOICE_DEBS)"; \
	else \
	  echo "real voices: not root or no apt-get; install $(REAL_VOICE_DEBS) to add them"; \
	fi
	@for pkg in $(PACKAGE_VOICE_DEBS); do \
	  if [ -d "$(REAL_VOICES_DIR)/$$pkg/usr" ]; then continue; fi; \
	  tmp=$$(mktemp -d) && (cd "$$tmp" && apt-get download -qq "$$pkg" >/dev/null 2>&1) \
	    && mkdir -p "$(REAL_VOICES_DIR)/$$pkg.part" \
	    && dpkg-deb -x "$$tmp"/"$$pkg"_*.deb "$(REAL_VOICES_DIR)/$$pkg.part" \
	    && mv "$(REAL_VOICES_DIR)/$$pkg.part" "$(REAL_VOICES_DIR)/$$pkg" \
	    && echo "real voices: unpacked $$pkg into $(REAL_VOICES_DIR)" \
	    || echo "real voices: could not download $$pkg (apt-get download; run apt-get update?)"; \
	  rm -rf "$$tmp" "$(REAL_VOICES_DIR)/$$pkg.part"; \
	done

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

test: install lint
	$(PY) -m pytest -n 2 --dist loadgroup

demo: install real-voices
	$(VENV)/bin/hifi-tse demo $(DEMO_ARGS)

bench: install
	$(PY) benchmarks/bench_model.py

clean:
	rm -rf $(VENV) runs .pytest_cache
