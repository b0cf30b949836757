"""Settings: overrides > environment > TOML file > defaults; unknown keys and bad values
are errors that name the key; the README documents every setting."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from reelrank.config import Settings, load_settings, settings_table
from reelrank.errors import ConfigError
from reelrank.grammar import parse_api_keys

README = Path(__file__).resolve().parent.parent / "README.md"
DEFAULTS = Settings()


def write(tmp_path: Path, text: str, name: str = "reelrank.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- precedence ----------------------------------------------------------------------------


def test_defaults_with_an_empty_environment() -> None:
    s = load_settings(env={})
    assert s == Settings()
    assert (s.host, s.port, s.log_level) == ("127.0.0.1", 8000, "info")
    assert s.feed_default_n == 10 and s.feed_max_n == 100
    assert s.banned_terms == []
    assert s.score_weights["share"] == 3.0
    assert s.key_scopes() == {}


def test_file_beats_defaults(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'port = 9001\nhost = "0.0.0.0"\nbanned_terms = ["spam"]\n')
    s = load_settings(config_file=cfg, env={})
    assert (s.port, s.host, s.banned_terms) == (9001, "0.0.0.0", ["spam"])
    assert s.log_level == DEFAULTS.log_level  # untouched keys keep their defaults


def test_env_beats_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'port = 9001\nhost = "0.0.0.0"\n')
    s = load_settings(config_file=cfg, env={"REELRANK_PORT": "9002"})
    assert s.port == 9002
    assert s.host == "0.0.0.0"  # the file still supplies what the env does not


def test_overrides_beat_env_and_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'port = 9001\nlog_level = "debug"\nmax_batch = 7\n')
    env = {"REELRANK_PORT": "9002", "REELRANK_LOG_LEVEL": "warning"}
    s = load_settings(config_file=cfg, env=env, port=9003)
    assert s.port == 9003
    assert s.log_level == "warning"
    assert s.max_batch == 7


def test_each_layer_contributes_its_own_keys(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'host = "10.0.0.1"\nseen_max = 11\nsession_len = 3\n')
    env = {"REELRANK_SEEN_MAX": "22", "REELRANK_MAX_BATCH": "5"}
    s = load_settings(config_file=cfg, env=env, session_len=9)
    assert (s.host, s.seen_max, s.max_batch, s.session_len) == ("10.0.0.1", 22, 5, 9)


def test_none_override_falls_through_to_env() -> None:
    s = load_settings(env={"REELRANK_PORT": "9100"}, port=None)
    assert s.port == 9100


def test_config_file_named_by_env(tmp_path: Path) -> None:
    cfg = write(tmp_path, "port = 9201\n")
    s = load_settings(env={"REELRANK_CONFIG": str(cfg)})
    assert s.port == 9201
    # An explicit file wins over REELRANK_CONFIG.
    other = write(tmp_path, "port = 9202\n", name="other.toml")
    assert load_settings(config_file=other, env={"REELRANK_CONFIG": str(cfg)}).port == 9202


def test_other_environment_variables_are_ignored() -> None:
    env = {"PATH": "/bin", "HOME": "/root", "REELRANKX_PORT": "1", "MY_REELRANK_PORT": "2"}
    assert load_settings(env=env) == Settings()


def test_env_values_are_typed() -> None:
    s = load_settings(
        env={
            "REELRANK_PORT": "8123",
            "REELRANK_AFFINITY_HALF_LIFE_H": "1.5",
            "REELRANK_FEED_REQUIRES_KEY": "true",
            "REELRANK_HOST": "::1",
        }
    )
    assert s.port == 8123 and isinstance(s.port, int)
    assert s.affinity_half_life_h == 1.5 and isinstance(s.affinity_half_life_h, float)
    assert s.feed_requires_key is True
    assert s.host == "::1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("yes", True), ("ON", True), ("0", False), ("false", False), ("off", False)],
)
def test_env_booleans(raw: str, expected: bool) -> None:
    assert load_settings(env={"REELRANK_FEED_REQUIRES_KEY": raw}).feed_requires_key is expected


def test_store_url_defaults_under_data_dir(tmp_path: Path) -> None:
    s = load_settings(env={"REELRANK_DATA_DIR": str(tmp_path)})
    assert s.store_url() == f"sqlite:///{tmp_path / 'reelrank.db'}"
    assert load_settings(env={"REELRANK_STORE": "memory://"}).store_url() == "memory://"


# -- unknown keys --------------------------------------------------------------------------


def test_unknown_env_key_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="REELRANK_PROT"):
        load_settings(env={"REELRANK_PROT": "9000"})


def test_unknown_file_key_is_rejected_by_name(tmp_path: Path) -> None:
    cfg = write(tmp_path, "port = 9000\nbanned_termz = []\n")
    with pytest.raises(ConfigError, match="banned_termz"):
        load_settings(config_file=cfg, env={})


def test_unknown_override_is_rejected_by_name() -> None:
    with pytest.raises(ConfigError, match="colour"):
        load_settings(env={}, colour="blue")


def test_missing_or_broken_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "absent.toml", env={})
    broken = write(tmp_path, "port = = 3\n")
    with pytest.raises(ConfigError, match=r"reelrank\.toml"):
        load_settings(config_file=broken, env={})


# -- bad values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"REELRANK_PORT": "abc"}, "port"),
        ({"REELRANK_PORT": "70000"}, "port"),
        ({"REELRANK_PORT": "-1"}, "port"),
        ({"REELRANK_MAX_BATCH": "0"}, "max_batch"),
        ({"REELRANK_FEED_DEFAULT_N": "200"}, "feed_default_n"),
        ({"REELRANK_FEED_MAX_N": "5"}, "feed_default_n"),
        ({"REELRANK_FEED_DEFAULT_N": "0"}, "feed_default_n"),
        ({"REELRANK_FEED_REQUIRES_KEY": "maybe"}, "feed_requires_key"),
        ({"REELRANK_AFFINITY_HALF_LIFE_H": "0"}, "affinity_half_life_h"),
        ({"REELRANK_HOTNESS_HALF_LIFE_H": "-3"}, "hotness_half_life_h"),
        ({"REELRANK_SMOOTHING_STRENGTH": "-1"}, "smoothing_strength"),
        ({"REELRANK_TRENDING_REFRESH_S": "nan"}, "trending_refresh_s"),
        ({"REELRANK_SNAPSHOT_INTERVAL_S": "0"}, "snapshot_interval_s"),
        ({"REELRANK_IMPRESSION_FLUSH_S": "x"}, "impression_flush_s"),
        ({"REELRANK_SEEN_MAX": "0"}, "seen_max"),
        ({"REELRANK_SESSION_LEN": "1.5"}, "session_len"),
        ({"REELRANK_LOG_LEVEL": "loud"}, "log_level"),
        ({"REELRANK_SQLITE_SYNCHRONOUS": "OFF"}, "sqlite_synchronous"),
        ({"REELRANK_SCORE_WEIGHTS": '{"likes": 2}'}, "score_weights"),
        ({"REELRANK_SCORE_WEIGHTS": '{"like": "lots"}'}, "score_weights"),
        ({"REELRANK_SCORE_WEIGHTS": "[1, 2]"}, "score_weights"),
        ({"REELRANK_SCORE_WEIGHTS": "like=2"}, "score_weights"),
        ({"REELRANK_RECALL_QUOTAS": '{"trending": -1}'}, "recall_quotas"),
        ({"REELRANK_RECALL_QUOTAS": '{"viral": 10}'}, "recall_quotas"),
        ({"REELRANK_BANNED_TERMS": '["ok", 3]'}, "banned_terms"),
        ({"REELRANK_BANNED_TERMS": "[not json"}, "banned_terms"),
        ({"REELRANK_API_KEYS": "k1=ingest,superuser"}, "api_keys"),
    ],
)
def test_bad_env_values_are_rejected_by_name(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings(env=env)


def test_unknown_score_weight_name_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"REELRANK_SCORE_WEIGHTS": '{"virality": 1}'})
    assert "virality" in str(info.value)
    assert "share" in str(info.value)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('port = "abc"', "port"),
        ("host = 5", "host"),
        ('banned_terms = "spam"', "banned_terms"),
        ("banned_terms = [1, 2]", "banned_terms"),
        ("feed_requires_key = 1", "feed_requires_key"),
        ("score_weights = { virality = 1.0 }", "score_weights"),
        ("score_weights = 3", "score_weights"),
        ("feed_default_n = 50\nfeed_max_n = 20", "feed_default_n"),
    ],
)
def test_bad_file_values_are_rejected_by_name(tmp_path: Path, toml: str, key: str) -> None:
    cfg = write(tmp_path, toml + "\n")
    with pytest.raises(ConfigError, match=key):
        load_settings(config_file=cfg, env={})


def test_bad_override_value_is_rejected() -> None:
    with pytest.raises(ConfigError, match="feed_default_n"):
        load_settings(env={}, feed_default_n=101)
    with pytest.raises(ConfigError, match="port"):
        load_settings(env={}, port="eighty")


@pytest.mark.parametrize("raw", ['{"like": NaN}', '{"share": Infinity}'])
def test_non_finite_score_weights_are_rejected(raw: str) -> None:
    with pytest.raises(ConfigError, match="score_weights"):
        load_settings(env={"REELRANK_SCORE_WEIGHTS": raw})


@pytest.mark.parametrize("raw", ["-100", "nan"])
def test_bad_max_future_skew_is_rejected(raw: str) -> None:
    with pytest.raises(ConfigError, match="max_future_skew_s"):
        load_settings(env={"REELRANK_MAX_FUTURE_SKEW_S": raw})


# -- lists and dicts from the environment and the file --------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("spam", ["spam"]),
        ("spam, scam ,,eggs", ["spam", "scam", "eggs"]),
        ('["spam", " scam "]', ["spam", "scam"]),
        ('["buy now", "a,b"]', ["buy now", "a,b"]),  # JSON keeps commas inside a term
        ("", []),
        ("[]", []),
    ],
)
def test_env_banned_terms(raw: str, expected: list[str]) -> None:
    assert load_settings(env={"REELRANK_BANNED_TERMS": raw}).banned_terms == expected


def test_env_score_weights_merge_with_defaults() -> None:
    s = load_settings(env={"REELRANK_SCORE_WEIGHTS": '{"like": 5, "skip": -2.5}'})
    expected = dict(DEFAULTS.score_weights, like=5.0, skip=-2.5)
    assert s.score_weights == expected
    assert all(isinstance(v, float) for v in s.score_weights.values())
    assert Settings().score_weights["like"] == 2.0  # the defaults were not mutated


def test_env_recall_quotas_merge_with_defaults_as_ints() -> None:
    s = load_settings(env={"REELRANK_RECALL_QUOTAS": '{"explore": 0, "fresh": 12}'})
    assert s.recall_quotas == dict(DEFAULTS.recall_quotas, explore=0, fresh=12)
    assert all(type(v) is int for v in s.recall_quotas.values())


def test_file_tables_merge_with_defaults(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[score_weights]\nhotness = 0.9\n\n[recall_quotas]\ntrending = 7\n")
    s = load_settings(config_file=cfg, env={})
    assert s.score_weights == dict(DEFAULTS.score_weights, hotness=0.9)
    assert s.recall_quotas == dict(DEFAULTS.recall_quotas, trending=7)


# -- api keys ------------------------------------------------------------------------------


def test_parse_api_keys() -> None:
    assert parse_api_keys("k1=ingest,feed;k2=admin") == {
        "k1": frozenset({"ingest", "feed"}),
        "k2": frozenset({"admin"}),
    }
    assert parse_api_keys(" k1 = feed , ingest ; ;k2=admin;") == {
        "k1": frozenset({"ingest", "feed"}),
        "k2": frozenset({"admin"}),
    }
    assert parse_api_keys("") == {}


@pytest.mark.parametrize(
    "spec", ["k1=ingest,root", "k1=", "k1", "=feed", "k1=feed;k2=read", "k1=, ,"]
)
def test_bad_api_keys_are_errors(spec: str) -> None:
    with pytest.raises(ConfigError, match="api_keys"):
        parse_api_keys(spec)


def test_api_keys_through_settings() -> None:
    s = load_settings(env={"REELRANK_API_KEYS": "k1=ingest,feed;k2=admin"})
    assert s.key_scopes() == {"k1": frozenset({"ingest", "feed"}), "k2": frozenset({"admin"})}
    with pytest.raises(ConfigError, match="root"):
        load_settings(env={"REELRANK_API_KEYS": "k1=root"})


def test_api_key_errors_do_not_echo_the_secret() -> None:
    secret = "s3cr3t-key-value-0123456789"
    with pytest.raises(ConfigError) as info:
        parse_api_keys(f"{secret}=feed,bogus")
    assert secret not in str(info.value)
    assert "bogus" in str(info.value)


# -- documentation ------------------------------------------------------------------------


def test_settings_table_lists_every_setting() -> None:
    table = settings_table()
    for f in dataclasses.fields(Settings):
        assert f"`REELRANK_{f.name.upper()}`" in table
        assert f"`{f.name}`" in table


def test_readme_documents_every_setting() -> None:
    assert README.is_file(), f"{README} is missing"
    text = README.read_text()
    missing = [
        f"REELRANK_{f.name.upper()}"
        for f in dataclasses.fields(Settings)
        if f"REELRANK_{f.name.upper()}" not in text
    ]
    assert missing == [], f"README.md does not document {missing}"


def test_readme_settings_table_is_current() -> None:
    """The README's table is the one `settings_table()` renders from the code."""
    from reelrank.config import settings_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    start, end = "<!-- settings:start -->\n", "\n<!-- settings:end -->"
    assert readme[readme.index(start) + len(start) : readme.index(end)] == settings_table()
