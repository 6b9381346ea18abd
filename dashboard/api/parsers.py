"""Request body parsing that answers 400 to anything, however hostile.

`json.loads` recurses once per nesting level: a body of 100,000 `[` raises RecursionError, which
DRF's JSONParser lets through as a 500. Nothing TAC-X accepts nests deeper than a few levels.
A `\ud800` escape decodes to text that cannot be encoded (pipeline.unicode_text): a 400 naming
the field, for every field of every operation, before any serializer or lookup sees it.
"""

from __future__ import annotations

from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser

from pipeline.unicode_text import UNENCODABLE, unencodable_field


class BoundedJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
        if field := unencodable_field(data):
            raise ValidationError({field: [UNENCODABLE]}, code="invalid")
        return data
