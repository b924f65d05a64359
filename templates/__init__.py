"""STATe action templates: libraries of reasoning choices, controllers that pick them, and their analysis."""

from erlgym.templates.controllers import (
    CONTROLLERS,
    BanditController,
    Controller,
    ForcedController,
    SteeredController,
    UniformController,
    build_controller,
)
from erlgym.templates.library import (
    Choice,
    Dimension,
    Template,
    TemplateError,
    TemplateLibrary,
    bundled_libraries,
    load_library,
)

__all__ = [
    "CONTROLLERS", "BanditController", "Choice", "Controller", "Dimension", "ForcedController",
    "SteeredController", "Template", "TemplateError", "TemplateLibrary", "UniformController",
    "build_controller", "bundled_libraries", "load_library",
]
