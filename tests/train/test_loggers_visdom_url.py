"""A malformed ``--visdom`` URL is refused up front, naming the flag, before the run claims its folder.

Visdom "never stops training" once a run has started (a dead server costs one warning); a typo in
the URL is caught by ``TrainConfig.validate`` instead, where every other flag is checked.
"""

from __future__ import annotations

import pytest
from tests.helpers.cli import run_sepconv

from sepconv.train.config import TrainConfig, parse_visdom_url


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:80a",  # port not a number
        "localhost:99999",  # port out of range
        "localhost:0",
        "ftp://localhost:8097",  # not http(s)
        "http://",  # no host
        "http://local host:8097",
        "http://localhost:8097/plots",  # a path visdom would ignore
    ],
)
def test_malformed_urls_are_refused_by_validate(url):
    with pytest.raises(ValueError) as refused:
        TrainConfig(visdom=url).validate()
    assert str(refused.value) == f"visdom must be a URL like http://host:port (port 1-65535), got {url!r}"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("localhost", ("http://localhost", 8097)),
        ("localhost:9000", ("http://localhost", 9000)),
        ("https://10.0.0.5:443/", ("https://10.0.0.5", 443)),
    ],
)
def test_well_formed_urls_pass(url, expected):
    assert parse_visdom_url(url) == expected
    TrainConfig(visdom=url).validate()


def test_the_command_refuses_it_in_one_line_and_claims_no_folder(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_sepconv(
        ["train", "--out", str(out_dir), "--epochs", "1", "--visdom", "http://localhost:80a"], capsys
    )
    assert code == 2 and out == ""
    assert err == (
        "sepconv train: error: --visdom must be a URL like http://host:port (port 1-65535), got "
        "'http://localhost:80a'\n"
    )
    assert not out_dir.exists()
