"""The reference in docs/ is generated from the models and cannot drift from them: regenerated
here and compared, usable by an off-the-shelf JSON Schema validator, and every field, command
and reason code described, in the repository's own files only."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema_rs
import pytest
from typer.testing import CliRunner

from domain.commands import COMMAND_TYPES, CommandError, parse_command
from domain.queries import DecisionRequest
from interlock import reference
from interlock.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
STORY = ROOT / "examples" / "5-21" / "story.jsonl"


def test_the_committed_reference_is_what_the_models_generate() -> None:
    assert reference.stale_files(DOCS, STORY) == [], "run `interlock docs` and commit"


def test_docs_check_names_a_stale_file(tmp_path: Path) -> None:
    shutil.copytree(DOCS, tmp_path / "docs")
    assert CliRunner().invoke(app, ["docs", str(tmp_path / "docs"), "--check", "--story",
                                    str(STORY)]).exit_code == 0
    schema = tmp_path / "docs" / "schema" / "command.schema.json"
    schema.write_text(schema.read_text().replace('"maxLength": 200', '"maxLength": 300', 1))
    result = CliRunner().invoke(app, ["docs", str(tmp_path / "docs"), "--check", "--story",
                                      str(STORY)])
    assert result.exit_code == 1
    assert result.stderr == f"{schema}: out of date; run `interlock docs`\n"
    written = CliRunner().invoke(app, ["docs", str(tmp_path / "docs"), "--story", str(STORY)])
    assert written.exit_code == 0 and reference.stale_files(tmp_path / "docs", STORY) == []


def test_every_field_is_described_exactly_once() -> None:
    """By the model itself or by the table, never both, and the table names no field that is
    not there."""
    used = set()
    for owner, model in reference._owners():
        for field, prop in model.model_json_schema()["properties"].items():
            own = prop.get("description")
            key = (owner, field) if (owner, field) in reference.MEANINGS else ("*", field)
            assert bool(own) != (key in reference.MEANINGS), (owner, field)
            used.add(key)
    assert set(reference.MEANINGS) == used, set(reference.MEANINGS) - used


def test_every_command_has_one_summary_and_its_example() -> None:
    examples = reference.story_examples(STORY)
    for name in COMMAND_TYPES:
        docstring = reference.COMMAND_MODELS[name].__doc__
        assert bool(docstring) != (name in reference.SUMMARIES), name
        assert type(parse_command(examples[name])).__name__ == (
            reference.COMMAND_MODELS[name].__name__)
    assert set(reference.SUMMARIES) <= set(COMMAND_TYPES)
    text = (DOCS / "commands.md").read_text()
    for name in COMMAND_TYPES:
        assert f"\n## {name}\n" in text and json.dumps(examples[name]) in text


def validator(name: str) -> jsonschema_rs.Validator:
    schema = json.loads((DOCS / "schema" / name).read_text())
    return jsonschema_rs.validator_for(schema, validate_formats=True)


REFUSED = [
    {"type": "register_model", "model": "fable-5", "family": "fable", "colour": "red"},
    {"type": "delete_everything"},
    {"model": "fable-5", "family": "fable"},
    {"type": "register_model", "model": "fable 5", "family": "fable"},
    {"type": "register_model", "model": "", "family": "fable"},
    {"type": "grant_entitlement", "entitlement": "e", "grantee": {"org": "o"}, "models": []},
    {"type": "grant_entitlement", "entitlement": "e", "grantee": {"org": "o"},
     "models": ["family:"]},
    {"type": "attest_location", "subject": "u", "country": "FR", "source": "ip-geo",
     "valid_from": "2026-11-26T08:00:00"},
    {"type": "revoke_attestation", "subject": "u", "kind": "passport"},
    {"type": "issue_directive", "directive": "d", "models": ["m"],
     "subjects": {"citizenship": {"some_of": ["US"]}}},
    {"type": "issue_directive", "directive": "d", "models": ["m"], "subjects": {"all": []}},
    {"type": "issue_directive", "directive": "d", "models": ["m"],
     "subjects": {"everyone": True, "us_person": False}},
    {"type": "issue_directive", "directive": "d", "models": ["m"], "subjects": {"everyone": 1}},
    {"type": "issue_directive", "directive": "d", "models": ["m"],
     "subjects": {"everyone": True}, "effect": "allow"},
    {"type": "lift_directive", "directive": "d", "signature": {"key_id": "k"}},
]


def test_a_json_schema_validator_accepts_the_story() -> None:
    commands = validator("command.schema.json")
    for number, line in enumerate(STORY.read_text().splitlines(), start=1):
        errors = [e.message for e in commands.iter_errors(json.loads(line))]
        assert errors == [], f"story line {number}"


@pytest.mark.parametrize("document", REFUSED, ids=lambda d: json.dumps(d)[:60])
def test_the_schema_refuses_what_interlock_refuses(document: dict) -> None:
    with pytest.raises(CommandError):
        parse_command(document)
    assert not validator("command.schema.json").is_valid(document)


def test_the_decision_request_schema_matches_the_model() -> None:
    requests = validator("decision-request.schema.json")
    good = {"subject": "u-chen", "model": "fable-5", "at": "2026-11-26T17:25:00-05:00",
            "as_of": 42, "location": "FR"}
    DecisionRequest.model_validate(good)
    assert requests.is_valid(good)
    for bad in ({"subject": "u-chen"}, {**good, "colour": "red"}, {**good, "as_of": -1},
                {**good, "at": "2026-11-26T17:25:00"}):
        assert not requests.is_valid(bad), bad
        with pytest.raises(ValueError):
            DecisionRequest.model_validate(bad)


def reason_codes() -> set[str]:
    """Every reason code the code base can give, read from where reasons are made."""
    codes = set()
    for path in [*ROOT.glob("domain/*.py"), *ROOT.glob("interlock/**/*.py"),
                 *ROOT.glob("projections/*.py")]:
        codes |= set(re.findall(r'\bReason\(\s*"([a-z_]+)"', path.read_text()))
    return codes


def test_the_decision_rule_page_explains_every_reason_code() -> None:
    codes = reason_codes()
    assert {"unknown_model", "directive", "route_cycle", "stale_index"} <= codes
    rows = re.findall(r"^\| `([a-z_]+)` \|", (DOCS / "decision-rule.md").read_text(), re.M)
    assert set(rows) >= codes, codes - set(rows)


DOCUMENTS = [ROOT / "README.md", ROOT / "schemas" / "README.md", *DOCS.glob("*.md"),
             *(ROOT / "examples").glob("**/*.md")]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_documents_point_only_inside_the_repository(document: Path) -> None:
    text = document.read_text()
    assert "DESIGN.md" not in text and "shared/" not in text
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        assert (document.parent / target).resolve().is_relative_to(ROOT), target
        assert (document.parent / target).exists(), f"{document.name}: {target} is missing"
