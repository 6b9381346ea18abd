"""Request body parsing that answers 400 to anything, however hostile.

`json.loads` recurses once per nesting level: a body of 100,000 `[` raises RecursionError, which
DRF's JSONParser lets through as a 500. Nothing TAC-X accepts nests deeper than a few levels.
"""

from __future__ import annotations

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
