"""The wire contract's fast form: ``RewardFields`` (plain dicts) validates exactly as ``RewardRequest``."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError, field_validator

from trainer_client.protocol import RewardFields, RewardRequest, _fields_of

FIELDS = TypeAdapter(RewardFields)

SAMPLES = [
    '{"solution": "x"}',
    '{"response": "x", "prompt": "q", "ground_truth": 3}',
    '{"solution_str": "x", "problem": "p", "ground_truth": 3.0}',
    '{"solution": "x", "ground_truth": true}',
    '{"solution": "x", "ground_truth": NaN}',
    '{"solution": "x", "ground_truth": 1e400}',
    '{"solution": "x", "ground_truth": -Infinity}',
    '{"solution": "x", "ground_truth": 123456789012345678901234567890}',
    '{"solution": "x", "extra_info": null, "group_id": 3}',
    '{"solution": "x", "extra_info": {"index": [1, {"a": null}]}, "return_critique": true}',
    '{"solution": "x", "overlong": {"max_resp_len": 10, "buffer_len": 2}, "recipe": "math", "data_source": "d"}',
    # refused by both
    '{"solution": "x", "ground_truth": [1]}',
    '{"solution": "x", "bogus": 1}',
    '{"question": "q"}',
    '{"solution": "x", "extra_info": [1]}',
    '{"solution": "x", "group_id": NaN}',
    '{"solution": "x", "overlong": {"max_resp_len": 0, "buffer_len": 2}}',
    '{"solution": 5}',
]


@pytest.mark.parametrize("raw", SAMPLES)
def test_fields_validate_as_the_model_does(raw):
    try:
        expected = vars(RewardRequest.model_validate_json(raw))
    except ValidationError as exc:
        with pytest.raises(ValidationError) as got:
            FIELDS.validate_json(raw)
        assert [e["loc"][0] for e in got.value.errors()] == [e["loc"][0] for e in exc.errors()]
        return
    assert FIELDS.validate_json(raw) == expected  # every field present, defaults filled, labels as text


def test_label_normalisation():
    fields = [FIELDS.validate_json(f'{{"solution": "x", "ground_truth": {v}}}')["ground_truth"]
              for v in ("3", "3.5", '"3"', "true", "NaN", "Infinity", "null")]
    assert fields == ["3", "3.5", "3", "1", None, None, None]
    assert FIELDS.validate_json('{"solution": "x", "extra_info": null}')["extra_info"] == {}


def test_a_model_with_python_validators_is_refused():
    class Checked(BaseModel):
        text: str

        @field_validator("text")
        @classmethod
        def _strip(cls, v: str) -> str:
            return v.strip()

    with pytest.raises(TypeError, match="field types"):
        _fields_of(Checked)
