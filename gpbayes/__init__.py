"""gpbayes: high-frequency and multi-scale PDEs solved with Gaussian processes (GP-HM)."""

import jax

jax.config.update("jax_enable_x64", True)

from gpbayes import compilation  # noqa: E402

compilation.enable_compilation_cache()

from gpbayes.conditional import Conditional  # noqa: E402
from gpbayes.errors import SpecError  # noqa: E402
from gpbayes.infer.map import fit_map  # noqa: E402
from gpbayes.infer.nuts import sample_nuts  # noqa: E402
from gpbayes.infer.posterior import gaussian_posterior  # noqa: E402
from gpbayes.model import log_density, pde_model  # noqa: E402
from gpbayes.problem import Problem  # noqa: E402
from gpbayes.spec import Recipe, SampleRecipe, load_inference, load_model, map_recipe_of  # noqa: E402

__all__ = ["Conditional", "Problem", "Recipe", "SampleRecipe", "SpecError", "fit_map",
           "gaussian_posterior", "load_inference", "load_model", "log_density", "map_recipe_of",
           "pde_model", "sample_nuts"]
__version__ = "0.1.0"
