"""The manual (README.md and docs/*.md): relative links and images resolve, `#anchor`s name headings, every docs page
is listed in docs/index.md, ```python blocks compile and the `nlp-rnn` commands in ```bash blocks name real
commands and only their real options. Fast: no subprocesses, the command tree is read from the typer app."""

import functools
import re
import shlex
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_CODE = re.compile(r"(`+)((?:(?!\n\s*\n).)+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
HTML = re.compile(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", re.IGNORECASE)
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
SHELL_SEPARATORS = {"|", "||", "&&", ";", "&"}


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def name_of(page: Path) -> str:
    try:
        return page.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return str(page)


def split(text: str) -> tuple[str, list[tuple[str, int, list[str]]]]:
    """The text with fenced code blocks blanked (line numbers kept), and the blocks: (language, first line, lines)."""
    prose, blocks, block = [], [], None
    for number, line in enumerate(text.splitlines(), start=1):
        fence = FENCE.match(line)
        if block is None and fence:
            block = (fence.group(1), fence.group(2).lower(), number + 1, [])
            prose.append("")
        elif block is not None:
            if line.strip().startswith(block[0]) and not line.strip().strip(block[0][0]):
                blocks.append(block[1:])
                block = None
            else:
                block[3].append(line)
            prose.append("")
        else:
            prose.append(line)
    if block is not None:
        blocks.append(block[1:])
    return "\n".join(prose), blocks


def without_inline_code(prose: str) -> str:
    return INLINE_CODE.sub(lambda m: "code" + "\n" * m.group(0).count("\n"), prose)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lower-cased, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for line in split(text)[0].splitlines():
        match = HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


@functools.cache
def anchors_of(path: Path) -> frozenset:
    return frozenset(anchors(path.read_text(encoding="utf-8")))


def links(text: str) -> list[tuple[int, str]]:
    """(line, target) of every link, image, reference definition and HTML src/href outside code."""
    prose = without_inline_code(split(text)[0])
    found = []
    for pattern in (LINK, REFERENCE, HTML):
        for match in pattern.finditer(prose):
            found.append((prose.count("\n", 0, match.start(1)) + 1, match.group(1)))
    return sorted(found)


def resolve(page: Path, target: str) -> Path | None:
    """The file a relative link points to (None for an external or same-page link)."""
    path = unquote(target.split("#", 1)[0])
    if SCHEME.match(target) or target.startswith("//") or not path:
        return None
    return (page.parent / path).resolve()


def check_links(page: Path, text: str) -> list[str]:
    problems = []
    for line, target in links(text):
        where = f"{name_of(page)}:{line}"
        if SCHEME.match(target) or target.startswith("//"):
            continue  # http(s) and other external links are not checked
        if not target:
            problems.append(f"{where}: an empty link")
            continue
        anchor = unquote(target.split("#", 1)[1]) if "#" in target else None
        file = resolve(page, target)
        if file is not None:
            if ROOT not in file.parents and file != ROOT:
                problems.append(f"{where}: `{target}` points outside the repository ({file})")
                continue
            if not file.exists():
                problems.append(f"{where}: `{target}` points to {name_of(file)}, which does not exist")
                continue
        if anchor is not None:
            if file is None:
                known = anchors(text)
            elif file.suffix == ".md" and file.is_file():
                known = anchors_of(file)
            else:
                continue  # an anchor into a non-Markdown file (e.g. a line of a source file)
            if anchor not in known:
                problems.append(
                    f"{where}: `{target}`: no heading with the anchor `#{anchor}` in "
                    f"{name_of(file) if file else name_of(page)}"
                )
    return problems


@functools.cache
def command_tree():
    import typer.main

    from nlp_rnn.cli import app

    return typer.main.get_command(app)


def option_names(command) -> set[str]:
    names = {"--help"}
    for param in command.params:
        names.update(param.opts)
        names.update(param.secondary_opts)
    return names


def logical_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined, each with the number of its first line."""
    joined, start, parts = [], None, []
    for number, line in enumerate(lines, start=first):
        if start is None:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        joined.append((start, " ".join(part.strip() for part in parts)))
        start, parts = None, []
    if parts:
        joined.append((start, " ".join(part.strip() for part in parts)))
    return joined


def invocations(words: list[str]) -> list[list[str]]:
    """The `nlp-rnn ...` (or `-m nlp_rnn ...`) commands of one shell line, without environment assignments and
    redirections."""
    commands, segment = [], []
    for word in words + [";"]:
        if word in SHELL_SEPARATORS:
            while segment and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", segment[0]):
                segment = segment[1:]  # environment assignments before the command
            if segment and segment[0] == "nlp-rnn":
                commands.append(segment[1:])
            elif "-m" in segment[:-1] and segment[segment.index("-m") + 1] == "nlp_rnn":
                commands.append(segment[segment.index("-m") + 2 :])
            segment = []
        else:
            segment.append(word)
    result = []
    for command in commands:
        words, skip = [], False
        for word in command:
            if skip:
                skip = False
            elif re.fullmatch(r"\d?[<>]+&?", word):
                skip = True  # a redirection and its file
            else:
                words.append(word)
        result.append(words)
    return result


def check_command(words: list[str], where: str) -> list[str]:
    command, path = command_tree(), ["nlp-rnn"]
    while hasattr(command, "commands") and words and not words[0].startswith("-"):
        sub = command.commands.get(words[0])
        if sub is None:
            known = ", ".join(sorted(command.commands))
            return [f"{where}: `{words[0]}` is not a command of `{' '.join(path)}` (it has: {known})"]
        command, path, words = sub, path + [words[0]], words[1:]
    known = option_names(command)
    problems = []
    for word in words:
        if word == "--":
            break  # the rest are arguments
        if word.startswith("--") and word.split("=", 1)[0] not in known:
            problems.append(f"{where}: `{word.split('=', 1)[0]}` is not an option of `{' '.join(path)}`")
    return problems


def check_code(page: Path, text: str) -> list[str]:
    problems = []
    for language, first, lines in split(text)[1]:
        if language in ("python", "py"):
            source = "\n".join(lines) + "\n"
            try:
                compile(source, f"{name_of(page)}:{first}", "exec")
            except SyntaxError as error:
                line = first + (error.lineno or 1) - 1
                problems.append(f"{name_of(page)}:{line}: python example does not compile: {error.msg}")
        elif language in ("bash", "sh", "shell", "console"):
            for number, line in logical_lines(lines, first):
                try:
                    words = shlex.split(line.strip(), comments=True)
                except ValueError:
                    continue  # not a line shlex can read (e.g. an unclosed quote): skipped
                for command in invocations(words):
                    problems += check_command(command, f"{name_of(page)}:{number}")
    return problems


def test_relative_links_and_images_point_to_existing_files_and_headings() -> None:
    problems = [p for page in pages() for p in check_links(page, page.read_text(encoding="utf-8"))]
    assert not problems, "\n".join(problems)


def test_every_docs_page_is_listed_in_the_index_and_the_readme_links_the_index() -> None:
    index = DOCS / "index.md"
    assert index.is_file(), "docs/index.md is missing"
    listed = {resolve(index, target) for _, target in links(index.read_text(encoding="utf-8"))}
    missing = [
        name_of(page) for page in sorted(DOCS.glob("*.md")) if page != index and page.resolve() not in listed
    ]
    assert not missing, f"docs/index.md does not link: {', '.join(missing)}"
    readme = ROOT / "README.md"
    from_readme = {resolve(readme, target) for _, target in links(readme.read_text(encoding="utf-8"))}
    assert index.resolve() in from_readme, "README.md does not link docs/index.md"


def test_every_image_in_docs_is_shown_on_a_page() -> None:
    shown = {
        resolve(page, target) for page in pages() for _, target in links(page.read_text(encoding="utf-8"))
    }
    unused = [name_of(image) for image in sorted(DOCS.glob("*.png")) if image.resolve() not in shown]
    assert not unused, f"images no page shows: {', '.join(unused)}"


def test_python_examples_compile_and_nlp_rnn_commands_name_real_commands_and_options() -> None:
    problems = [p for page in pages() for p in check_code(page, page.read_text(encoding="utf-8"))]
    assert not problems, "\n".join(problems)


def test_the_checker_reports_bad_options_commands_links_anchors_and_python() -> None:
    page = DOCS / "snippet.md"
    text = """# A page

See [the index](index.md), [a page](#a-page) and [gone](no-such-page.md).
![a picture](no-such-picture.png) and [a heading](#no-such-heading)
Code spans are not links: `[x](nowhere.md)`.

```bash
nlp-rnn translate --beam-size 5 --no-such-option x.de   # a comment --not-checked
cat x.de | nlp-rnn translate --max-length=50 \\
    --format jsonl > out.jsonl
nlp-rnn train translation --config c.yaml --bogus-train-flag
nlp-rnn trian lm
OMP_NUM_THREADS=1 nlp-rnn classify --bogus-after-env -- --not-an-option-after-dashes
echo 'unclosed
```

```python
print('fine')
def broken(:
```
"""  # lines 3 and 4: bad links; 8, 11, 12 and 13: bad options and a bad command; 19: bad Python
    links_found = check_links(page, text)
    code_found = check_code(page, text)
    problems = links_found + code_found

    def reported(line: int, word: str) -> bool:
        return any(p.startswith(f"docs/snippet.md:{line}:") and word in p for p in problems)

    assert reported(3, "no-such-page.md"), problems
    assert reported(4, "no-such-picture.png"), problems
    assert reported(4, "#no-such-heading"), problems
    assert reported(8, "--no-such-option"), problems
    assert reported(11, "--bogus-train-flag"), problems
    assert reported(12, "trian"), problems
    assert reported(13, "--bogus-after-env"), problems
    assert reported(19, "does not compile"), problems
    for fine in (
        "index.md",
        "#a-page",
        "nowhere.md",
        "--beam-size",
        "--not-checked",
        "--max-length",
        "--format",
        "--config",
        "--not-an-option-after-dashes",
    ):
        assert not any(f"`{fine}`" in p for p in problems), (fine, problems)
    assert len(problems) == 8, "\n".join(problems)
