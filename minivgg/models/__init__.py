"""The model zoo and the training recipes."""
from .zoo import MODELS, ModelSpec, UnknownModelError, build, get_model_spec
from .recipes import DEFAULT_RECIPE, RECIPES, Recipe, UnknownRecipeError, get_recipe

__all__ = ["MODELS", "ModelSpec", "UnknownModelError", "build", "get_model_spec",
           "DEFAULT_RECIPE", "RECIPES", "Recipe", "UnknownRecipeError", "get_recipe"]
