"""Benchmark suite of "Freeze or Fine-tune": `python -m bench.run [--quick] [--out bench/report.json]`."""
