# tf_sparse_prune: two commands on a fresh machine.
#   make demo   trains, prunes, strips, exports and checks a CNN on Fashion-MNIST
#   make test   the whole suite (C++ kernel tests and the Python tests)
# Each target installs what is missing: the venv, the package (with its native
# delegate, built by CMake through scikit-build-core) and the data.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
FMNIST_SRC ?= /usr/share/datasets/fashion-mnist
FMNIST_DST := $(HOME)/.keras/datasets/fashion-mnist
FMNIST_FILES := train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz
NATIVE_SRC := $(shell find tflite_kernels -type f \( -name '*.cc' -o -name '*.h' -o -name 'CMakeLists.txt' \) 2>/dev/null) CMakeLists.txt
PYTEST_ARGS ?=
# pytest-xdist workers: the suite is mostly single-threaded graph tracing, so two
# processes use both cores of a 2-core machine (`make test PYTEST_WORKERS=0` runs serially)
PYTEST_WORKERS ?= 2

.PHONY: all install data test test-native test-python demo lint bench clean

all: test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Editable install; the native delegate is rebuilt whenever its sources change.
$(STAMP): $(VENV)/bin/python pyproject.toml $(NATIVE_SRC)
	$(PIP) install -q -e '.[test,bench,dev]'
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST comes from the Debian package dataset-fashion-mnist; link its
# files where keras.datasets.fashion_mnist.load_data() looks, so no download happens.
data:
	@if [ ! -f $(FMNIST_SRC)/t10k-labels-idx1-ubyte.gz ]; then \
	  echo "installing Debian package dataset-fashion-mnist"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q dataset-fashion-mnist; \
	fi
	@mkdir -p $(FMNIST_DST)
	@for f in $(FMNIST_FILES); do ln -sf $(FMNIST_SRC)/$$f $(FMNIST_DST)/$$f; done
	@echo "Fashion-MNIST linked into $(FMNIST_DST)"

test: install data test-native test-python

# C++ unit tests of the delegate's packing and kernels (host, and aarch64 under qemu).
test-native: install
	@if [ -x tflite_kernels/run_tests.sh ]; then tflite_kernels/run_tests.sh; \
	else echo "tflite_kernels: no native tests yet"; fi

test-python: install data
	@$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; fi; exit $$rc

demo: install data
	$(PY) examples/demo.py

lint: install
	$(PY) -m ruff check tf_sparse_prune tests benchmarks examples
	$(PY) -m ruff format --check tf_sparse_prune tests benchmarks examples

bench: install data
	$(PY) benchmarks/accuracy.py

clean:
	rm -rf build $(VENV) .pytest_cache
