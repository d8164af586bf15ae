"""The reference a newcomer reads: docs/commands.md and the JSON Schema of commands and decision
requests, generated from the pydantic models that validate them.

Types, limits, defaults and which fields are required come from the models (their JSON Schema
and field defaults); what a field means comes from the model's own description where it has
one, else from `MEANINGS` below, never from both; each command's example is its first line in
the 5:21 story (examples/5-21/story.jsonl), which the tests apply as it is. `interlock docs`
writes the files and `interlock docs --check` fails when a committed copy differs, so the
reference cannot drift from what Interlock accepts.
"""

from __future__ import annotations

import ast
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter

from domain import limits
from domain.commands import COMMAND_TYPES, Command, Exemptions, Grantee, Signature
from domain.predicates import (
    ATTRIBUTES,
    AllOf,
    AnyOf,
    Everyone,
    Membership,
    Not,
    UsPerson,
    predicate_json_schemas,
)
from domain.queries import DecisionRequest

JSON_SCHEMA = "https://json-schema.org/draft/2020-12/schema"
REF = "#/$defs/{model}"
STORY = Path("examples/5-21/story.jsonl")
"""The story whose first line of each command type is that command's example."""

COMMAND_MODELS: dict[str, type[BaseModel]] = {
    model.model_fields["type"].annotation.__args__[0]: model  # type: ignore[union-attr]
    for model in get_args(get_args(Command)[0])
}
NESTED: dict[str, type[BaseModel]] = {
    "grantee": Grantee, "exempt": Exemptions, "signature": Signature,
}
"""Objects inside commands, by the field that holds them."""

SUMMARIES = {
    "register_model": "Registers a model version, so that entitlements, directives and "
                      "decisions can name it. A model that is not registered is denied "
                      "(`unknown_model`).",
    "withdraw_model": "Takes a model version out of service from `effective_at` on: every "
                      "decision for it is then `model_withdrawn`.",
    "reinstate_model": "Puts a withdrawn model version back into service from `effective_at` "
                       "on.",
    "grant_entitlement": "Entitles a subject, or every attested employee of an org, to the "
                         "models its selectors cover, over a span of valid time.",
    "revoke_entitlement": "Ends an entitlement from `effective_at` on.",
    "attest_nationality": "Records a subject's citizenships and permanent residencies. A "
                          "later attestation supersedes the earlier one from its `valid_from`; "
                          "past its `valid_until` the attributes are unknown.",
    "attest_location": "Records where a subject is. A request's own `location` takes "
                       "precedence over it.",
    "attest_employer": "Records the org a subject works for; the subject is then entitled "
                       "to what the org's entitlements cover.",
    "revoke_attestation": "Withdraws a subject's attestation of one kind from `effective_at` "
                          "on: the attribute is unknown from then (an older attestation does "
                          "not come back).",
    "issue_directive": "Records an order: from `effective_at` (default `received_at`) the "
                       "subjects its predicate selects are denied, or routed to `route_to`, "
                       "for the models its selectors cover.",
    "lift_directive": "Ends a directive from `effective_at` on.",
}
"""What each command does, where its model has no docstring of its own."""

MEANINGS: dict[tuple[str, str], str] = {
    ("*", "type"): "Picks the command.",
    ("*", "command_id"): "Makes the command idempotent: the same id with the same command "
                         "again is a counted no-op, with a different command an error. A "
                         "signed directive must carry one.",
    ("*", "effective_at"): "Valid time from which the change holds; default (null): the "
                           "moment it is recorded.",
    ("*", "valid_from"): "Start of the valid time; default (null): the moment it is "
                         "recorded.",
    ("*", "valid_until"): "End of the valid time (exclusive); null: open-ended.",
    ("*", "source"): "Where the fact comes from (e.g. `passport-kyc`, `hr-feed`, `ip-geo`); "
                     "shown by `history` and `explain`.",
    ("*", "evidence"): "Optional reference to the evidence (a document id), kept with the "
                       "fact.",
    ("*", "signature"): "An officer's signature (see `signature` below); required on directive "
                        "commands when officer keys are configured.",
    ("register_model", "model"): "The model version's id, e.g. `fable-5`; no whitespace, `:` "
                                 "or `*` (those belong to selectors).",
    ("register_model", "family"): "Its family, e.g. `fable`; selectors name it as "
                                  "`family:fable`.",
    ("withdraw_model", "model"): "The registered model version.",
    ("reinstate_model", "model"): "The withdrawn model version.",
    ("grant_entitlement", "entitlement"): "A new entitlement's id.",
    ("grant_entitlement", "grantee"): "Who is entitled: a subject, or an org (its attested "
                                      "employees).",
    ("grant_entitlement", "models"): "Model selectors it covers: a model id (registered), "
                                     "`family:NAME`, or `*` for every model.",
    ("revoke_entitlement", "entitlement"): "The entitlement to end.",
    ("attest_nationality", "subject"): "The subject (user) id; a subject exists from its first "
                                       "attestation or grant.",
    ("attest_nationality", "citizenships"): "Every citizenship, as ISO 3166-1 alpha-2 codes "
                                            "(dual nationals have several); upper-cased.",
    ("attest_nationality", "residencies"): "Countries of permanent residency (ISO 3166-1 "
                                           "alpha-2); `US` makes the subject a US person.",
    ("attest_nationality", "valid_from"): "Start of the valid time (a passport attests "
                                          "citizenship since birth); default: the moment it "
                                          "is recorded.",
    ("attest_location", "subject"): "The subject (user) id.",
    ("attest_location", "country"): "Where the subject is (ISO 3166-1 alpha-2).",
    ("attest_employer", "subject"): "The subject (user) id.",
    ("attest_employer", "org"): "The org the subject works for.",
    ("revoke_attestation", "subject"): "The subject whose attestation ends.",
    ("revoke_attestation", "kind"): "Which of its attestations: `nationality`, `location` or "
                                    "`employer`.",
    ("revoke_attestation", "effective_at"): "From when the attribute is unknown; default: the "
                                            "moment it is recorded.",
    ("issue_directive", "directive"): "A new directive's id, e.g. the order's number.",
    ("issue_directive", "authority"): "Who gave the order (free text).",
    ("issue_directive", "reference"): "The order's own reference (free text).",
    ("issue_directive", "received_at"): "When the order arrived; default: the moment it is "
                                        "recorded.",
    ("issue_directive", "effective_at"): "When the order takes effect; default: "
                                         "`received_at`.",
    ("issue_directive", "expires_at"): "When it stops holding by itself (exclusive); null: "
                                       "never.",
    ("issue_directive", "models"): "Model selectors it covers: a model id (registered), "
                                   "`family:NAME`, or `*`.",
    ("issue_directive", "subjects"): "The subject predicate (see below): whom it applies to.",
    ("issue_directive", "effect"): "`deny` cuts access; `route` sends the subject to "
                                   "`route_to` instead.",
    ("issue_directive", "route_to"): "For `route`: the model version to send the subject to "
                                     "(decided by the same rule); null for `deny`.",
    ("issue_directive", "disclose"): "For `route`: whether the decision tells that it was "
                                     "routed (`disclosed`).",
    ("issue_directive", "exempt"): "Subjects and orgs it does not apply to (e.g. under a "
                                   "licence).",
    ("issue_directive", "on_unknown"): "When the predicate is unknown for a subject: `apply` "
                                       "(fail closed) or `ignore` (alias `skip`).",
    ("amend_directive", "directive"): "The directive to amend (not lifted).",
    ("amend_directive", "effective_at"): "From when the carried terms replace the ones "
                                         "before; default: the moment it is recorded.",
    ("amend_directive", "expires_at"): "A new expiry; an explicit null clears it.",
    ("amend_directive", "models"): "New model selectors.",
    ("amend_directive", "subjects"): "A new subject predicate.",
    ("amend_directive", "effect"): "A new effect, `deny` or `route`.",
    ("amend_directive", "route_to"): "A new route target.",
    ("amend_directive", "disclose"): "Whether a route is disclosed, from now on.",
    ("amend_directive", "exempt"): "The new exemptions (they replace the old ones whole).",
    ("amend_directive", "on_unknown"): "`apply` or `ignore` (alias `skip`), from now on.",
    ("lift_directive", "directive"): "The directive to lift.",
    ("lift_directive", "effective_at"): "From when it no longer holds; default: the moment it "
                                        "is recorded.",
    ("grantee", "subject"): "A subject id.",
    ("grantee", "org"): "An org id: its attested employees are entitled.",
    ("exempt", "subjects"): "Subject ids the directive skips.",
    ("exempt", "orgs"): "Org ids whose attested employees it skips.",
    ("signature", "key_id"): "The officer's key id in the officer-keys table.",
    ("signature", "value"): "Base64 of the 64-byte Ed25519 signature over the command's "
                            "canonical JSON (`interlock sign` makes it).",
    ("decision_request", "subject"): "The subject asking.",
    ("decision_request", "model"): "The model version asked for.",
    ("decision_request", "at"): "The valid time to decide at; default: now.",
    ("decision_request", "as_of"): "Use only facts stored up to this position; default: all.",
    ("decision_request", "known_at"): "Use only facts recorded by this time; default: all.",
    ("decision_request", "location"): "Where the request comes from (ISO 3166-1 alpha-2); "
                                      "overrides the attested location.",
    ("decision_request", "purpose"): "Why it asks; only predicates on `purpose` read it.",
}
"""What each field means, where the model does not say: keyed by (command type, nested object
or `decision_request`; field), with `*` for a meaning every command shares."""

PREDICATE_KINDS = {kind.__name__ for kind in (AllOf, AnyOf, Not, Everyone, Membership, UsPerson)}

PREDICATES = """\
A directive's `subjects` is a predicate: a JSON document, never code. Each node is an object
with exactly one key:

| node | true when |
|---|---|
| `{"all": [P, ...]}` | every part is true |
| `{"any": [P, ...]}` | some part is true |
| `{"not": P}` | the part is false |
| `{"everyone": true}` | always |
| `{ATTR: {"any_of": [v, ...]}}` | one of the subject's values of ATTR is in the list |
| `{ATTR: {"none_of": [v, ...]}}` | none of them is |
| `{"us_person": true}` / `false` | the subject is (is not) a US citizen or US permanent resident |

An attribute with no valid attestation is *unknown*, and so is every node that depends on it:
`all` is false as soon as one part is false, `any` true as soon as one part is true, otherwise
an unknown part makes the whole unknown (Kleene's three-valued logic). What an unknown
predicate means is the directive's `on_unknown`; see [the decision rule](decision-rule.md).
Country codes in predicates are upper-cased like those of attestations.
"""


def meaning(owner: str, field: str, schema: dict[str, Any]) -> str:
    """The field's description: the model's own, else the table's (owner's, then shared)."""
    return schema.get("description") or MEANINGS.get((owner, field)) or MEANINGS[("*", field)]


def _defaults(model: type[BaseModel], field: str) -> tuple[bool, Any]:
    """(required, default as JSON) of a model's field."""
    info = model.model_fields[field]
    if info.is_required():
        return True, None
    value = info.get_default(call_default_factory=True)
    return False, TypeAdapter(info.annotation).dump_python(value, mode="json")


def _owners() -> Iterator[tuple[str, type[BaseModel]]]:
    yield from ((name, COMMAND_MODELS[name]) for name in COMMAND_TYPES)
    yield from NESTED.items()
    yield "decision_request", DecisionRequest


def _predicate_refs(schema: Any) -> Any:
    """The schema with each anyOf over the predicate's node kinds made one `Predicate` ref."""
    if isinstance(schema, list):
        return [_predicate_refs(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    options = schema.get("anyOf")
    kinds = {o["$ref"].rsplit("/", 1)[-1] for o in options or () if "$ref" in o}
    if kinds == PREDICATE_KINDS:
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        predicate = {"$ref": REF.format(model="Predicate")}
        if {"type": "null"} in options:
            return {**rest, "anyOf": [predicate, {"type": "null"}]}
        return {**rest, **predicate}
    return {key: _predicate_refs(value) for key, value in schema.items()}


def _annotate(definitions: dict[str, Any], owner: str, model: type[BaseModel]) -> None:
    """Adds what each property means and its default (pydantic leaves out factory defaults)."""
    schema = definitions[model.__name__]
    for field, prop in schema["properties"].items():
        prop["description"] = meaning(owner, field, prop)
        required, default = _defaults(model, field)
        if not required:
            prop.setdefault("default", default)


def story_examples(story: Path = STORY) -> dict[str, dict[str, Any]]:
    """The first command of each type in the story, as written there."""
    examples: dict[str, dict[str, Any]] = {}
    for line in story.read_text(encoding="utf-8").splitlines():
        if line.strip():
            command = json.loads(line)
            examples.setdefault(command["type"], command)
    return examples


def command_schema(story: Path = STORY) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one command, a line of `interlock apply`."""
    schema = _predicate_refs(TypeAdapter(Command).json_schema(ref_template=REF))
    definitions = schema["$defs"]
    definitions.update(predicate_json_schemas(REF))  # the language, not its dataclasses
    examples = story_examples(story)
    for owner, model in _owners():
        if owner == "decision_request":
            continue
        _annotate(definitions, owner, model)
        if owner in COMMAND_MODELS:
            definitions[model.__name__].setdefault("description", SUMMARIES.get(owner))
            definitions[model.__name__]["examples"] = [examples[owner]]
    return {"$schema": JSON_SCHEMA, "title": "Interlock command",
            "description": "One command: a line of `interlock apply`, a `POST /v1/commands` "
                           "body or an `interlock.commands` message. `type` picks it.",
            **schema}


def decision_request_schema() -> dict[str, Any]:
    """JSON Schema of a decision request: a line of `decide --batch`, a `POST /v1/decide`
    body (which may add `min_position`)."""
    schema = TypeAdapter(DecisionRequest).json_schema(ref_template=REF)
    _annotate({DecisionRequest.__name__: schema}, "decision_request", DecisionRequest)
    return {"$schema": JSON_SCHEMA, "title": "Interlock decision request", **schema}


# --------------------------------------------------------------------- docs/commands.md


def _branch(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The non-null branch of a nullable schema, and whether null is allowed."""
    options = schema.get("anyOf")
    if options and {"type": "null"} in options and len(options) == 2:
        (other,) = [o for o in options if o != {"type": "null"}]
        return {**{k: v for k, v in schema.items() if k != "anyOf"}, **other}, True
    return schema, False


def _type(schema: dict[str, Any]) -> str:
    schema, nullable = _branch(schema)
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        kind = "predicate" if name == "Predicate" else "object " + next(
            (f"`{field}`" for field, model in NESTED.items() if model.__name__ == name), name)
    elif "const" in schema:
        kind = f"`{json.dumps(schema['const'])}`"
    elif "enum" in schema:
        kind = " or ".join(f"`{value}`" for value in schema["enum"])
    elif schema.get("type") == "array":
        kind = "list of " + _type(schema.get("items", {})).replace("string", "strings")
    elif schema.get("format") == "date-time":
        kind = "timestamp"
    else:
        kind = schema.get("type", "any")
    return kind + (" or null" if nullable else "")


def _limits(schema: dict[str, Any]) -> str:
    schema, _ = _branch(schema)
    found = []
    low, high = schema.get("minLength"), schema.get("maxLength")
    if low is not None or high is not None:
        found.append(_span(low, high, "character"))
    if "pattern" in schema:
        found.append(f"matches `{schema['pattern']}`")
    low, high = schema.get("minItems"), schema.get("maxItems")
    if low is not None or high is not None:
        found.append(_span(low, high, "item"))
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None or high is not None:
        found.append(f"{low if low is not None else '…'} to {high if high is not None else '…'}")
    if schema.get("type") == "array" and _limits(schema.get("items", {})):
        found.append("each " + _limits(schema["items"]))
    if schema.get("format") == "date-time":
        found.append("ISO-8601 with an offset")
    return "; ".join(found)


def _span(low: int | None, high: int | None, unit: str) -> str:
    if low is not None and high is not None:
        return f"{low:,} to {high:,} {unit}s" if low != high else f"{low:,} {unit}s"
    if high is not None:
        return f"at most {high:,} {unit}s"
    return f"at least {low:,} {unit}{'s' if low != 1 else ''}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(owner: str, model: type[BaseModel], schema: dict[str, Any]) -> list[str]:
    rows = ["| field | type | required / default | limits | meaning |",
            "|---|---|---|---|---|"]
    for field, prop in schema["properties"].items():
        required, default = _defaults(model, field)
        given = "required" if required else f"`{json.dumps(default)}`"
        rows.append(f"| `{field}` | {_cell(_type(prop))} | {given} | {_cell(_limits(prop))} | "
                    f"{_cell(meaning(owner, field, prop))} |")
    return rows


def _limit_constants() -> list[tuple[str, int, str]]:
    """The bounds of domain/limits.py with the docstring under each, read from its source."""
    tree = ast.parse(inspect.getsource(limits))
    found = []
    for node, after in zip(tree.body, [*tree.body[1:], None], strict=True):
        if isinstance(node, ast.Assign) and isinstance(after, ast.Expr) and isinstance(
            after.value, ast.Constant
        ):
            name = node.targets[0].id  # type: ignore[attr-defined]
            found.append((name, getattr(limits, name), " ".join(after.value.value.split())))
    return found


def commands_markdown(story: Path = STORY) -> str:
    """docs/commands.md."""
    commands = command_schema(story)
    definitions = commands["$defs"]
    examples = story_examples(story)
    out = [
        "# Command reference",
        "",
        "<!-- Generated by `interlock docs` from the pydantic models (domain/commands.py, "
        "domain/queries.py) and domain/limits.py; do not edit by hand. -->",
        "",
        "Every fact reaches Interlock as a command: one JSON object per line for "
        "`interlock apply`, the body of `POST /v1/commands`, or a message on "
        "`interlock.commands`. Its `type` picks one of the commands below. A field that is "
        "not listed, an unknown `type`, a timestamp without a UTC offset or a value out of "
        "its limits is refused with a message naming the field, and nothing of the command "
        "is stored. [schema/command.schema.json](schema/command.schema.json) is the same "
        "reference as JSON Schema (draft 2020-12), for editors and validators; "
        "[schema/decision-request.schema.json](schema/decision-request.schema.json) "
        "describes a decision request. [The decision rule](decision-rule.md) says what the "
        "facts mean for a decision. Every example is a line of "
        "[the 5:21 p.m. story](../examples/5-21/README.md).",
        "",
        "Timestamps are ISO-8601 with an offset (`2026-11-26T17:21:00-05:00`, "
        "`2026-11-26T22:21:00Z`) and are kept in UTC. A *valid time* (`valid_from`, "
        "`effective_at`, ...) says when a fact holds in the world; the *recorded time* is "
        "when Interlock stored it, and every stored event also gets a *position*, the "
        "store's sequence number.",
        "",
        "## Limits",
        "",
        "| limit | value | what it bounds |",
        "|---|---|---|",
        *(f"| `{name}` | {value:,} | {_cell(text)} |" for name, value, text in _limit_constants()),
        "",
        "Commands: " + ", ".join(f"[`{name}`](#{name})" for name in COMMAND_TYPES) + ".",
    ]
    for name in COMMAND_TYPES:
        model = COMMAND_MODELS[name]
        schema = definitions[model.__name__]
        out += ["", f"## {name}", "", schema["description"], "",
                *_table(name, model, schema), "", "Example:", "", "```json",
                json.dumps(examples[name]), "```"]
    out += ["", "## Objects inside commands"]
    for field, model in NESTED.items():
        schema = definitions[model.__name__]
        out += ["", f"### {field}", ""]
        if schema.get("description"):
            out += [schema["description"], ""]
        out += _table(field, model, schema)
    out += ["", "## Subject predicates", "", PREDICATES.rstrip(), "",
            "Attributes (`ATTR`): " + ", ".join(f"`{a}`" for a in ATTRIBUTES) + ". "
            "`citizenship` and `residency` come from `attest_nationality`, `location` from "
            "`attest_location` (or the request), `employer` from `attest_employer`, `subject` "
            "is the subject's id, and `purpose` comes only from the request."]
    request = decision_request_schema()
    out += ["", "## Decision requests", "", request["description"], "",
            "A line of `interlock decide --batch`, or the body of `POST /v1/decide` (which "
            "also takes `min_position`). Unknown fields are refused here too.", "",
            *_table("decision_request", DecisionRequest, request), "", "Example:", "",
            "```json",
            json.dumps({"subject": "u-chen", "model": "fable-5",
                        "at": "2026-11-26T17:25:00-05:00"}), "```", ""]
    return "\n".join(out)


def reference_files(story: Path = STORY) -> dict[str, str]:
    """Each generated file's path under docs/ and its text."""
    def dumped(schema: dict[str, Any]) -> str:
        return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"

    return {
        "commands.md": commands_markdown(story),
        "schema/command.schema.json": dumped(command_schema(story)),
        "schema/decision-request.schema.json": dumped(decision_request_schema()),
    }


def stale_files(docs: Path, story: Path = STORY) -> list[str]:
    """The generated files under `docs` that are missing or differ from what the models say."""
    return [name for name, text in reference_files(story).items()
            if not (docs / name).is_file() or (docs / name).read_text(encoding="utf-8") != text]
