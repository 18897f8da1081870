"""The core runs without the heavy extras, and names the extra to install when one is needed."""

from __future__ import annotations

import subprocess
import sys
import textwrap

BLOCK = """
import sys
for name in ("tensorflow", "tf_keras", "keras", "tf2onnx", "torch", "matplotlib", "pandas", "pyarrow", "sklearn"):
    sys.modules[name] = None  # makes `import name` raise ImportError, as on a core-only install
"""


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300)


def test_core_imports_and_runs_without_extras():
    proc = _run("""
        import numpy as np
        import jaxsens
        from jaxsens import examples
        model = jaxsens.load_model(examples.default_model_path())
        result = jaxsens.jacobian_importance(model, examples.default_data_path())
        print(result.ranking()[0][0])
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "f03"


def test_keras_file_without_tensorflow_names_the_extra(tmp_path):
    import json
    import zipfile

    path = tmp_path / "m.keras"  # a well-formed archive: the converter gets as far as needing TensorFlow
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "s", "layers": []}}
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.15.1"}))
        z.writestr("model.weights.h5", b"")
    proc = _run(f"""
        import jaxsens
        try:
            jaxsens.load_model({str(path)!r})
        except ImportError as e:
            print("ERR", e)
    """)
    assert "ERR" in proc.stdout, proc.stderr
    assert "jaxsens[keras]" in proc.stdout


def test_plot_without_matplotlib_names_the_extra():
    proc = _run("""
        import jaxsens
        from jaxsens import examples
        r = jaxsens.jacobian_importance(jaxsens.load_model(examples.default_model_path()), examples.default_data_path())
        try:
            r.plot()
        except ImportError as e:
            print("ERR", e)
    """)
    assert "jaxsens[plot]" in proc.stdout, proc.stdout + proc.stderr
