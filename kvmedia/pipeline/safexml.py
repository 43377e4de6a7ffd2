"""A tiny XML tree from stdlib expat, safe for untrusted sidecars (XMP, NFO, AAE plists).

Sidecar files come from anywhere (cameras, downloads, other apps), so the parser refuses what
the "billion laughs" and external-entity attacks need: any DOCTYPE (hence any entity
declaration), and parameter-entity / external-entity resolution. Input is capped at
MAX_XML_BYTES. The result is a minimal element tree with namespace-qualified names
(`"<namespace uri> <local name>"`, or the bare name without a namespace).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.parsers import expat

MAX_XML_BYTES = 4 << 20


class UnsafeXmlError(ValueError):
    """The document declares a DTD or entities, or is too big: it is not parsed."""


@dataclass
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element] = field(default_factory=list)
    text: str = ""

    @property
    def local(self) -> str:
        return self.tag.rsplit(" ", 1)[-1]

    def iter(self) -> list[Element]:
        """This element and every descendant, document order."""
        out: list[Element] = []
        stack = [self]
        while stack:
            node = stack.pop()
            out.append(node)
            stack.extend(reversed(node.children))
        return out

    def all_text(self) -> str:
        return self.text + "".join(c.all_text() for c in self.children)


def _refuse(*_args: object) -> None:
    raise UnsafeXmlError("XML with a DOCTYPE or entity declarations is refused")


def parse(data: bytes) -> Element:
    """Parse `data` into an Element tree. UnsafeXmlError or ValueError on bad input."""
    if len(data) > MAX_XML_BYTES:
        raise UnsafeXmlError(f"XML document larger than {MAX_XML_BYTES} bytes")
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse
    parser.EntityDeclHandler = _refuse
    parser.UnparsedEntityDeclHandler = _refuse
    parser.ExternalEntityRefHandler = _refuse  # type: ignore[assignment]
    root = Element("", {})
    stack = [root]

    def start(tag: str, attrs: dict[str, str]) -> None:
        el = Element(tag, attrs)
        stack[-1].children.append(el)
        stack.append(el)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(text: str) -> None:
        stack[-1].text += text

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        raise ValueError(f"malformed XML: {exc}") from None
    if not root.children:
        raise ValueError("empty XML document")
    return root.children[0]
