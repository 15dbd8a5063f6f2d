"""Make `import tensorflow` fail, as on the lent GPU machine, to rehearse its runs here (docs/gpu_training.md):

    PYTHONPATH=tools/without_tensorflow:/tmp/jaxsite:$PWD KERAS_BACKEND=jax python ...

Python imports `sitecustomize` from the path at start-up. The finder raises ImportError and leaves sys.modules alone:
Keras asks whether "tensorflow" is in sys.modules, so a `sys.modules["tensorflow"] = None` stub would mislead it
(its preprocessing layers then try to import TensorFlow and fail where the real machine would not).
"""

import sys


class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r} (tools/without_tensorflow)", name=name)
        return None


sys.meta_path.insert(0, _NoTensorFlow())
