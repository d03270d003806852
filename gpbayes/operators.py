"""PDE expressions (``u_xx + u*(u**2 - 1)``, ``-1e4*sin(100*x)``): a safe parser, a whitelist
over Python's ``ast`` (never ``eval``), and evaluation in a given environment.
"""

import ast
import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from gpbayes.errors import SpecError

FUNCTIONS = {  # name: the function; min and max take two arguments, the rest one
    "sin": jnp.sin, "cos": jnp.cos, "tan": jnp.tan, "exp": jnp.exp, "log": jnp.log,
    "sqrt": jnp.sqrt, "tanh": jnp.tanh, "abs": jnp.abs, "sinh": jnp.sinh, "cosh": jnp.cosh,
    "arctan": jnp.arctan, "atan": jnp.arctan, "arcsin": jnp.arcsin, "asin": jnp.arcsin,
    "arccos": jnp.arccos, "acos": jnp.arccos, "erf": jax.scipy.special.erf,
    "sign": jnp.sign, "min": jnp.minimum, "max": jnp.maximum,
}
TWO_ARGUMENTS = {"min", "max"}
BUILTIN_CONSTANTS = {"pi": math.pi}
MAX_LENGTH = 2000
MAX_NODES = 500
MAX_EXPONENT = 64

_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b,
           ast.Pow: lambda a, b: a**b}
_UNARY = {ast.USub: lambda a: -a, ast.UAdd: lambda a: a}


def derivative_orders(name: str, variables) -> tuple | None:
    """Orders per axis of a derivative name: ``u_xxy`` -> (2, 1); ``u`` -> (0, ...)."""
    orders = [0] * len(variables)
    if name == "u":
        return tuple(orders)
    if not name.startswith("u_") or len(name) < 3:
        return None
    for ch in name[2:]:
        if ch not in variables:
            return None
        orders[variables.index(ch)] += 1
    if max(orders) > 2:
        return None
    return tuple(orders)


@dataclass(frozen=True)
class Expression:
    """A parsed expression; call it with a dict of names to arrays."""

    text: str
    tree: ast.AST
    names: frozenset

    def __call__(self, env):
        return _eval(self.tree.body, env)

    def derivatives(self, variables) -> dict:
        """{name: orders} of the u-derivatives this expression uses, by name (``names``
        is a set, in an order that changes with PYTHONHASHSEED: the order of the sums
        over the terms, and with it a MAP's rounding, would change run to run)."""
        out = {}
        for n in sorted(self.names):
            orders = derivative_orders(n, variables)
            if orders is not None:
                out[n] = orders
        return out


def parse(text, allowed_names, source=None, key=None, allow_u: bool = False,
          variables=()) -> Expression:
    """Parse ``text`` into an Expression, or raise SpecError naming ``source`` and ``key``."""
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise SpecError(f"expected an expression (text or number), got {type(text).__name__}",
                        source, key)
    text = str(text)
    if len(text) > MAX_LENGTH:
        raise SpecError(f"expression is longer than {MAX_LENGTH} characters", source, key)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        msg = getattr(err, "msg", None) or type(err).__name__
        raise SpecError(f"cannot parse expression {text!r}: {msg}", source, key) from None
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise SpecError(f"expression has more than {MAX_NODES} parts", source, key)
    names = set()
    _check(tree.body, names, set(allowed_names), allow_u, list(variables), text, source, key)
    return Expression(text, tree, frozenset(names))


def _check(node, names, allowed, allow_u, variables, text, source, key):
    def fail(msg):
        raise SpecError(f"{msg} in {text!r}", source, key)

    def walk(n):
        if isinstance(n, ast.BinOp):
            if type(n.op) not in _BINOPS:
                fail(f"operator {type(n.op).__name__} is not allowed")
            exponent = n.right.value if isinstance(n.right, ast.Constant) else 0
            if isinstance(n.op, ast.Pow) and isinstance(exponent, (int, float)) \
                    and abs(exponent) > MAX_EXPONENT:
                fail(f"exponent {n.right.value} is too large (at most {MAX_EXPONENT})")
            walk(n.left)
            walk(n.right)
        elif isinstance(n, ast.UnaryOp):
            if type(n.op) not in _UNARY:
                fail(f"operator {type(n.op).__name__} is not allowed")
            walk(n.operand)
        elif isinstance(n, ast.Constant):
            if isinstance(n.value, bool) or not isinstance(n.value, (int, float)):
                fail("only numbers may appear as constants")
            if not math.isfinite(n.value):
                fail("non-finite number")
        elif isinstance(n, ast.Call):
            fname = n.func.id if isinstance(n.func, ast.Name) else None
            arity = 2 if fname in TWO_ARGUMENTS else 1
            if fname not in FUNCTIONS or n.keywords or len(n.args) != arity:
                fail(f"function {fname or 'this call'!r} is not allowed (allowed: "
                     + ", ".join(sorted(set(FUNCTIONS) - TWO_ARGUMENTS))
                     + " with one argument; min, max with two)")
            for arg in n.args:
                walk(arg)
        elif isinstance(n, ast.Name):
            ok = n.id in allowed or n.id in BUILTIN_CONSTANTS
            if allow_u and derivative_orders(n.id, variables) is not None:
                ok = True
            if not ok:
                fail(f"unknown name {n.id!r}")
            names.add(n.id)
        else:
            fail(f"{type(n).__name__} is not allowed")

    walk(node)


def _eval(node, env):
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.Constant):
        return np.float64(node.value)  # IEEE arithmetic: 1/0 is inf, never an exception
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func.id](*(_eval(a, env) for a in node.args))
    if node.id in env:
        return env[node.id]
    return BUILTIN_CONSTANTS[node.id]


def constant(text, constants: dict, source=None, key=None) -> float:
    """Evaluate a constant expression (numbers, pi, the model's constants) to a float."""
    expr = parse(text, set(constants), source, key)
    with np.errstate(all="ignore"):
        value = float(expr({k: np.float64(v) for k, v in constants.items()}))
    if not math.isfinite(value):
        raise SpecError(f"{text!r} is not a finite number", source, key)
    return value
