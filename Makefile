# The two commands a newcomer runs first (both set everything up on a fresh machine):
#   make demo   start 2 GenRM servers + router on the tiny model, send a demo batch, print a table, stop
#   make test   run the test suite (real processes on 127.0.0.1)
.PHONY: setup demo test lint bench bench-router

.venv/.installed: pyproject.toml scripts/setup.sh scripts/verl-test-requirements.txt
	bash scripts/setup.sh
	touch $@

setup: .venv/.installed

demo: setup
	.venv/bin/genrm demo

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check .

bench: setup
	.venv/bin/python bench/engine_bench.py
	.venv/bin/python bench/reward_bench.py

# The router against sglang-router and vllm-router (installed into .bench-venv on first use); needs wrk.
bench-router: setup
	command -v wrk >/dev/null || { echo "needs wrk (Debian: apt-get install wrk)"; exit 2; }
	test -x .bench-venv/bin/vllm-router || .venv/bin/python bench/router_bench.py --install-rust-routers --scenarios ''
	.venv/bin/python bench/router_bench.py
