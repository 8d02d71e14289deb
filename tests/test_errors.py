"""Every error class of the library is a ProtbenchError: one except tells our messages from bugs."""

import importlib
import inspect
import pkgutil

import protbench_nrp
from protbench_nrp.errors import ProtbenchError


def test_every_error_class_the_library_defines_derives_from_the_root():
    defined = []
    for module_info in pkgutil.iter_modules(protbench_nrp.__path__):
        module = importlib.import_module(f"protbench_nrp.{module_info.name}")
        defined += [cls for _, cls in inspect.getmembers(module, inspect.isclass)
                    if issubclass(cls, BaseException) and cls.__module__ == module.__name__]
    names = {cls.__name__ for cls in defined}
    assert {"EngineError", "LaunchRefused", "GitCheckError", "PreflightError", "AnalysisError",
            "UnknownTargetError", "SetupError", "WindowInputError", "SteeredInputError"} <= names
    assert [cls.__name__ for cls in defined if not issubclass(cls, ProtbenchError)] == []


def test_the_root_keeps_what_callers_caught_before():
    from protbench_nrp.engine import EngineError
    from protbench_nrp.science import UnknownTargetError

    assert issubclass(EngineError, ValueError) and issubclass(UnknownTargetError, LookupError)
