#!/usr/bin/env python3
"""Regenerate tests/fixtures/django_parity.json from a real Django install.

Every expected value in the fixture is computed here by calling Django; none is
typed by hand. The Rust side (tests/django_parity.rs) replays the same inputs
through actix_conditional::cache_control and compares header bytes.

Usage (not part of CI; Django is not a dependency of the crate):

    python3 -m venv /tmp/dj && /tmp/dj/bin/pip install django
    /tmp/dj/bin/python tests/django/gen_parity.py

Django 6.x needs Python >= 3.12. The fixture records the Django and Python
versions used. Re-run after a Django upgrade and review the diff.

Inputs
------
* ``POLICY_FIELDS`` lists the keyword arguments in the order in which
  ``CachePolicy`` renders its directives (its "canonical order"). Django
  appends new directives in keyword order, so the kwargs are always passed in
  this order.
* ``CACHE_CONTROL_CASES``: (name, existing Cache-Control or None, policy).
* ``DIVERGENCES`` and ``VARY_DIVERGENCES``: inputs where actix-conditional deliberately differs from
  Django (Django raises, or keeps garbage). Django's outcome is recorded so the
  Rust test can assert that we still differ, and why.
* ``NEVER_CACHE_CASES``, ``VARY_CASES``, ``ETAG_CASES``.
"""

import json
import os
import pathlib
import platform
import sys

# Django renders several no-cache="field" values from a Python set; pin the string hash seed
# so that regenerating the fixture gives the same bytes (the Rust test ignores that order).
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable, *sys.argv])

import django  # noqa: E402
from django.conf import settings  # noqa: E402

settings.configure(DEBUG=False, DEFAULT_CHARSET="utf-8", USE_TZ=True)
django.setup()

from django.http import HttpResponse  # noqa: E402
from django.middleware.http import ConditionalGetMiddleware  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from django.utils.cache import (  # noqa: E402
    add_never_cache_headers,
    patch_cache_control,
    patch_vary_headers,
)

OUT = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "django_parity.json"

# Canonical order of CachePolicy::fmt. Booleans map to `True`, numbers to ints.
POLICY_FIELDS = [
    "public",
    "private",
    "max_age",
    "s_maxage",
    "no_cache",
    "no_store",
    "must_revalidate",
    "proxy_revalidate",
    "immutable",
    "stale_while_revalidate",
    "stale_if_error",
]

NEVER = {
    "private": True,
    "max_age": 0,
    "no_cache": True,
    "no_store": True,
    "must_revalidate": True,
}

CACHE_CONTROL_CASES = [
    ("new_header_from_policy", None, {"public": True, "max_age": 60}),
    ("smaller_new_max_age_wins", "max-age=300", {"max_age": 60}),
    ("smaller_existing_max_age_wins", "max-age=30", {"max_age": 60}),
    ("public_removes_private", "private", {"public": True}),
    ("private_removes_public", "public", {"private": True}),
    (
        "public_removes_private_and_is_appended",
        "private, max-age=300",
        {"public": True, "max_age": 60},
    ),
    ("private_removes_qualified_public", "public, immutable", {"private": True}),
    ("public_removes_qualified_private", 'private="Set-Cookie"', {"public": True}),
    ("bare_private_replaces_qualified_private", 'private="Set-Cookie", max-age=5', {"private": True}),
    ("bare_no_cache_beats_field_names", 'no-cache="Set-Cookie"', {"no_cache": True}),
    ("no_cache_field_name_is_kept", 'no-cache="Set-Cookie"', {"max_age": 10}),
    (
        "no_cache_field_names_accumulate",
        'no-cache="Set-Cookie", max-age=3, no-cache="Cookie"',
        {"max_age": 10},
    ),
    ("duplicate_no_cache_field_collapses", 'no-cache="A", no-cache="A"', {"no_store": True}),
    ("existing_bare_no_cache_absorbs_field", 'no-cache, no-cache="X"', {"max_age": 1}),
    ("names_are_lowercased", "MAX-AGE=300, Public", {"max_age": 60}),
    ("override_keeps_original_position", "Max-Age=60, NO-STORE, x-ext", {"no_store": True}),
    ("max_age_leading_zeros_normalised", "max-age=007", {"max_age": 60}),
    ("existing_max_age_kept_verbatim_without_new", "max-age=007, public", {"no_store": True}),
    ("s_maxage_is_overridden_not_minimised", "max-age=60, s-maxage=600", {"s_maxage": 900}),
    (
        "revalidate_policy_over_existing",
        "must-revalidate, max-age=0",
        {"max_age": 60, "must_revalidate": True},
    ),
    ("extensions_preserved_verbatim", 'foo=bar, x-ext, community="UCI"', {"immutable": True}),
    ("duplicate_directive_last_value_first_position", "max-age=10, public, max-age=20", {"max_age": 15}),
    ("stale_while_revalidate_overridden", "stale-while-revalidate=5", {"stale_while_revalidate": 30}),
    ("whitespace_around_commas_dropped", "  public ,  max-age=5  ", {"no_store": True}),
    ("empty_members_dropped", "a,,b, ,c", {"max_age": 1}),
    ("never_policy_over_existing", "public, max-age=5", NEVER),
    (
        "full_policy_on_empty_header",
        None,
        {
            "public": True,
            "max_age": 60,
            "s_maxage": 120,
            "no_cache": True,
            "no_store": True,
            "must_revalidate": True,
            "proxy_revalidate": True,
            "immutable": True,
            "stale_while_revalidate": 30,
            "stale_if_error": 86400,
        },
    ),
    ("empty_policy_leaves_header", "no-store, X-Foo=Bar", {}),
    ("overflowing_existing_max_age_loses", "max-age=99999999999999999999", {"max_age": 60}),
    (
        "overflowing_existing_max_age_loses_to_u32_max",
        "max-age=99999999999999999999",
        {"max_age": 4294967295},
    ),
    ("existing_max_age_above_2_pow_31_wins", "max-age=2147483649", {"max_age": 4294967295}),
    (
        "immutable_asset_gains_stale_if_error",
        "immutable, max-age=31536000, public",
        {"stale_if_error": 60},
    ),
    ("max_age_u32_max", None, {"max_age": 4294967295}),
]

# Inputs where we intentionally do something different. The reason is shown
# by the Rust test when it fails.
DIVERGENCES = [
    (
        "bare_existing_max_age",
        "max-age",
        {"max_age": 60},
        "Django computes int(True) == 1; a bare max-age is malformed (RFC 9111 §4.2.1), the new value wins",
    ),
    (
        "garbage_existing_max_age",
        "max-age=abc",
        {"max_age": 60},
        "Django raises ValueError from int(); we let the new max-age win",
    ),
    (
        "negative_existing_max_age",
        "max-age=-5",
        {"max_age": 60},
        "Django keeps min(-5, 60) = -5; delta-seconds has no sign, the new value wins",
    ),
    (
        "underscore_existing_max_age",
        "max-age=1_0",
        {"max_age": 60},
        "Python int() accepts '1_0' as 10; delta-seconds is 1*DIGIT, the new value wins",
    ),
    (
        "quoted_existing_max_age",
        'max-age="30"',
        {"max_age": 60},
        "Django raises ValueError; RFC 9111 §5.2 says recipients ought to accept the quoted form",
    ),
    (
        "comma_inside_quoted_no_cache",
        'no-cache="Set-Cookie, Cookie"',
        {"no_cache": True},
        "Django splits inside the quoted-string and emits a stray `cookie\"` directive",
    ),
    (
        "comma_inside_quoted_hides_max_age",
        'no-cache="a, max-age=5"',
        {"max_age": 60},
        "Django splits inside the quoted-string and raises ValueError on '5\"'",
    ),
    (
        "whitespace_around_equals",
        "max-age = 5",
        {"no_store": True},
        "Django 6 keeps the value's leading space ('max-age= 5'); we trim OWS around '='",
    ),
    (
        "nameless_members",
        "a, =, =x, b",
        {"max_age": 1},
        "Django keeps '=' and '=x' as directives with an empty name; we drop them",
    ),
    (
        "unterminated_quoted_value",
        'no-cache="abc',
        {"max_age": 1},
        "an unclosed quoted-string would swallow what follows it once written back; we drop it",
    ),
    (
        "empty_policy_without_header",
        None,
        {},
        "Django writes an empty Cache-Control; we leave the response without one",
    ),
]

VARY_DIVERGENCES = [
    (
        "duplicate_new_names",
        None,
        ["Cookie", "cookie"],
        "Django only checks new names against the existing header, not against each other",
    ),
    (
        "duplicate_existing_names",
        "Cookie, cookie",
        ["Accept"],
        "Django never de-duplicates the existing header; we keep the first spelling",
    ),
    (
        "empty_new_names",
        "Accept",
        ["", " "],
        "Django appends empty names (a trailing ', , '); we skip them",
    ),
    (
        "new_name_with_comma",
        "cookie",
        ["Accept, Cookie"],
        "Django appends 'Accept, Cookie' as one name; we split it like a header value",
    ),
]

NEVER_CACHE_CASES = [
    ("no_existing_headers", None, None),
    ("public_max_age", "public, max-age=3600", None),
    ("s_maxage_survives", "max-age=30, s-maxage=600", None),
    ("no_cache_field_absorbed", 'no-cache="Set-Cookie", max-age=5', None),
    ("private_immutable_keep_positions", "private, immutable", None),
    ("existing_expires_kept", None, "Wed, 21 Oct 2015 07:28:00 GMT"),
]

VARY_CASES = [
    ("added_to_empty", None, ["Cookie"]),
    ("appended_in_order", "Accept-Encoding", ["Cookie", "Accept-Language"]),
    ("case_insensitive_keeps_first_spelling", "Cookie", ["cookie", "COOKIE"]),
    ("mixed_case_existing", "accept, COOKIE", ["Cookie", "Origin"]),
    ("star_in_new_wins", "Accept-Encoding, Cookie", ["*"]),
    ("star_in_existing_wins", "*", ["Cookie"]),
    ("star_among_existing", "Cookie, *", []),
    ("whitespace_trimmed", "  Accept ,Cookie  ", ["Origin"]),
    ("empty_members_dropped", "Accept,,Cookie, ", ["Origin"]),
    ("new_names_trimmed", None, [" Origin ", "Accept"]),
    ("nothing_new", "Accept", []),
]


def _hex(b):
    return {"hex": b.hex()}


def _affine(spec):
    """byte[i] = (i * mul + add) % modulus; lets the fixture describe 100 KiB in one line."""
    return bytes((i * spec["mul"] + spec["add"]) % spec["modulus"] for i in range(spec["len"]))


_json_items = [
    {"id": i, "title": "todo %d" % i, "done": i % 3 == 0, "tags": ["a", "b"][: i % 3]}
    for i in range(200)
]
_json_body = json.dumps(_json_items, separators=(",", ":")).encode()[:4096]

# (name, body spec, body bytes, response Cache-Control or None)
_AFFINE = {"len": 102400, "mul": 31, "add": 7, "modulus": 251}
ETAG_CASES = [
    ("hello", {"utf8": "hello"}, b"hello", None),
    ("json_4k", {"utf8": _json_body.decode()}, _json_body, None),
    ("all_byte_values", _hex(bytes(range(256))), bytes(range(256)), None),
    ("non_utf8", _hex(b"\xff\xfe\x00caf\xe9\r\n\x80"), b"\xff\xfe\x00caf\xe9\r\n\x80", None),
    ("affine_100k", {"affine": _AFFINE}, _affine(_AFFINE), None),
    ("empty_body_gets_no_etag", {"hex": ""}, b"", None),
    ("no_store_gets_no_etag", {"utf8": "hello"}, b"hello", "no-store"),
    ("no_store_any_case_gets_no_etag", {"utf8": "hello"}, b"hello", "private, NO-STORE"),
    ("qualified_no_store_gets_no_etag", {"utf8": "hello"}, b"hello", 'no-store="Set-Cookie"'),
    ("no_cache_still_gets_etag", {"utf8": "hello"}, b"hello", "no-cache"),
]


def kwargs_for(policy):
    unknown = set(policy) - set(POLICY_FIELDS)
    assert not unknown, unknown
    # Build kwargs in canonical order: Django appends new directives in this order.
    return {k: policy[k] for k in POLICY_FIELDS if k in policy}


def run_patch(existing, policy, kwargs=None):
    """Django's patch_cache_control on `existing` with `kwargs` (default: the typed policy)."""
    response = HttpResponse()
    if existing is not None:
        response.headers["Cache-Control"] = existing
    try:
        patch_cache_control(response, **(kwargs if kwargs is not None else kwargs_for(policy)))
    except Exception as exc:  # noqa: BLE001 - recorded as Django's outcome
        return {"error": "%s: %s" % (type(exc).__name__, exc)}
    return {"result": response.headers.get("Cache-Control")}


# The vocabulary beyond CachePolicy's typed fields: Django's `@cache_control(**kwargs)` takes
# any directive. A string value for `no_cache` / `private` is a field-qualified directive
# (RFC 9111 §5.2.2.4, §5.2.2.7); any other keyword is an extension (§5.2.3). Keyword order is
# CachePolicy's (qualified `private` after visibility, extensions last), so Django appends
# in the order we do. The Rust side compares these modulo the quotes around field names:
# Django writes `no-cache=Set-Cookie`, we write RFC 9111's quoted-string form.
CACHE_CONTROL_VOCABULARY_CASES = [
    ("qualified_no_cache_added", None, {"no_cache": "Set-Cookie"}),
    (
        "qualified_no_cache_accumulates",
        'no-cache="Set-Cookie"',
        {"max_age": 60, "no_cache": "Link"},
    ),
    ("qualified_no_cache_kept_beside_bare_existing", "no-cache", {"no_cache": "Link"}),
    ("qualified_private_replaces_public", "public, max-age=60", {"private": "Set-Cookie"}),
    ("qualified_private_replaces_bare_private", "private, max-age=60", {"private": "Set-Cookie"}),
    ("extension_directive_added", "max-age=5", {"max_age": 60, "custom": 456}),
    ("extension_directive_replaced_in_place", "custom=1, max-age=5", {"custom": 456}),
    ("bare_extension_directive", None, {"max_age": 60, "x_flag": True}),
]


def cache_control_vocabulary_cases():
    # Keyword order as written: the cases put it in CachePolicy's order.
    return patch_cases(CACHE_CONTROL_VOCABULARY_CASES, lambda policy: policy)


def no_cache_members(value):
    return [m for m in value.split(", ") if m.split("=", 1)[0] == "no-cache"]


def patch_cases(cases, kwargs=kwargs_for):
    out = []
    for name, existing, policy in cases:
        outcome = run_patch(existing, policy, kwargs(policy))
        assert "result" in outcome, (name, outcome)
        result = outcome["result"]
        out.append(
            {
                "name": name,
                "existing": existing,
                "policy": policy,
                "django": result,
                # Django renders several no-cache field names from a Python set,
                # so their relative order depends on PYTHONHASHSEED.
                "no_cache_order_unspecified": len(no_cache_members(result)) > 1,
            }
        )
    return out


def cache_control_cases():
    return patch_cases(CACHE_CONTROL_CASES)


def vary_divergences():
    out = []
    for name, existing, new, reason in VARY_DIVERGENCES:
        response = HttpResponse()
        if existing is not None:
            response.headers["Vary"] = existing
        patch_vary_headers(response, new)
        out.append(
            {"name": name, "existing": existing, "new": new, "reason": reason, "django": response.headers["Vary"]}
        )
    return out


def divergences():
    out = []
    for name, existing, policy, reason in DIVERGENCES:
        case = {"name": name, "existing": existing, "policy": policy, "reason": reason}
        case.update(run_patch(existing, policy))
        case["django"] = case.pop("result", None)
        out.append(case)
    return out


def never_cache_cases():
    out = []
    for name, existing_cc, existing_expires in NEVER_CACHE_CASES:
        response = HttpResponse()
        if existing_cc is not None:
            response.headers["Cache-Control"] = existing_cc
        if existing_expires is not None:
            response.headers["Expires"] = existing_expires
        before = set(k.lower() for k in response.headers)
        add_never_cache_headers(response)
        after = set(k.lower() for k in response.headers)
        out.append(
            {
                "name": name,
                "existing_cache_control": existing_cc,
                "existing_expires": existing_expires,
                "cache_control": response.headers["Cache-Control"],
                "expires_set_to_now": existing_expires is None and "expires" in after,
                "expires": response.headers.get("Expires")
                if existing_expires is not None
                else None,
                "headers_added": sorted(after - before),
            }
        )
    return out


def vary_cases():
    out = []
    for name, existing, new in VARY_CASES:
        response = HttpResponse()
        if existing is not None:
            response.headers["Vary"] = existing
        patch_vary_headers(response, new)
        out.append({"name": name, "existing": existing, "new": new, "django": response.headers["Vary"]})
    return out


def etag_cases():
    rf = RequestFactory()
    out = []
    for name, spec, body, cache_control in ETAG_CASES:
        response = HttpResponse(body, content_type="application/octet-stream")
        if cache_control is not None:
            response.headers["Cache-Control"] = cache_control
        middleware = ConditionalGetMiddleware(lambda request, response=response: response)
        result = middleware(rf.get("/"))
        out.append(
            {
                "name": name,
                "body": spec,
                "body_len": len(body),
                "cache_control": cache_control,
                "etag": result.headers.get("ETag"),
            }
        )
    return out


def main():
    fixture = {
        "generated_by": "tests/django/gen_parity.py",
        "django_version": django.__version__,
        "python_version": platform.python_version(),
        "policy_fields_in_canonical_order": POLICY_FIELDS,
        "patch_cache_control": cache_control_cases(),
        # Recorded with the version that produced them: added later than the rest.
        "patch_cache_control_vocabulary": {
            "django_version": django.__version__,
            "python_version": platform.python_version(),
            "cases": cache_control_vocabulary_cases(),
        },
        "divergences": {
            "patch_cache_control": divergences(),
            "patch_vary_headers": vary_divergences(),
        },
        "add_never_cache_headers": never_cache_cases(),
        "patch_vary_headers": vary_cases(),
        "etags": etag_cases(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(fixture, indent=1, ensure_ascii=True) + "\n")
    print("wrote %s (Django %s)" % (OUT, django.__version__), file=sys.stderr)


if __name__ == "__main__":
    main()
