"""The placeholders a registration's URL and body templates may hold (the register call of
the source document): the one place that names them, read by validation and rendering."""

from __future__ import annotations

import re

USER_PROMPT = "USER_PROMPT"
MODEL_TEMPERATURE = "MODEL_TEMPERATURE"
MODEL_NAME = "MODEL_NAME"

#: Every placeholder a template may hold; USER_PROMPT must appear in the body.
KNOWN = frozenset({USER_PROMPT, MODEL_TEMPERATURE, MODEL_NAME})
#: Placeholders the URL may hold (the prompt never goes into a URL: it would be logged).
IN_URL = frozenset({MODEL_NAME})

#: `{NAME}` in a template; JSON's own braces never match (an upper-case name must follow).
PLACEHOLDER = re.compile(r"\{([A-Z][A-Z0-9_]*)\}")
#: `${NAME}` in a header value: a secret read from the calling service's environment.
SECRET_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholders_in(template: str) -> set[str]:
    """The placeholder names `template` holds, known or not."""
    return set(PLACEHOLDER.findall(template))
