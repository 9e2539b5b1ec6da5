import pytest

from lib.config import gender_filter_on, load_config
from lib.errors import UserError
from tests.conftest import ROOT

LOCAL = f"{ROOT}/conf/local.yaml"


def test_local_yaml_is_the_documented_default():
    cfg = load_config(LOCAL)
    assert cfg.spark.master == "local[2]"
    assert cfg.lake.path == "./lake"
    assert cfg.source.kind == "synthetic" and cfg.source.num_profiles == 5000
    assert cfg.match.k == 50
    assert cfg.synthesize.holdout_fraction == 0.2
    assert cfg.train.num_proc == 2


def test_set_overrides_are_typed():
    cfg = load_config(LOCAL, ["train.epochs=3", "train.learning_rate=0.5", "source.gender_filter=false",
                              "train.hidden_units=[32, 16]", "lake.path=/tmp/x", "spark.conf.spark.foo=bar"])
    assert cfg.train.epochs == 3 and isinstance(cfg.train.epochs, int)
    assert cfg.train.learning_rate == 0.5
    assert gender_filter_on(cfg.source) is False
    assert cfg.train.hidden_units == [32, 16]
    assert cfg.lake.path == "/tmp/x"
    assert cfg.spark.conf["spark.foo"] == "bar"


@pytest.mark.parametrize("override, words", [
    ("train.epochs=many", "expects int"),
    ("train.epochz=3", "unknown config key 'train.epochz'"),
    ("nosection.x=1", "unknown config key 'nosection'"),
    ("train=3", "is a section"),
    ("lake.path", "expected key=value"),
    ("match.k=0", "match.k must be positive"),
    ("features.hash_buckets=99999999999", "features.hash_buckets must be at most 1,000,000"),
    ("features.min_count=0", "features.min_count must be positive"),
    ("source.kind=mysql", "source.kind 'mysql' is not one of"),
    ("source.kind=okcupid", "needs a file"),
    ("synthesize.holdout_fraction=1.5", "must be in [0, 1)"),
    ("synthesize.retrieve=0", "synthesize.retrieve must be positive"),
    ("synthesize.retrieve=5", "synthesize.retrieve (5) must be at least synthesize.positives_per_user (10)"),
    ("synthesize.ivf_min_pool=-1", "synthesize.ivf_min_pool must be positive"),
    ("source.gender_filter=maybe", "must be auto, true or false"),
    ("run_id=../../escape", "run_id '../../escape' may hold only"),
    ("model_version=x' or '1'='1", "may hold only"),
    ("lake.path=", "lake.path is empty"),
    ("index.type=annoy", "index.type 'annoy' is not one of auto, flat, ivf, hnsw"),
    ("index.nprobe=0", "index.nprobe must be positive"),
    ("index.flat_max=-5", "index.flat_max must be positive"),
    ("index.hnsw_m=0", "index.hnsw_m must be positive"),
    ("index.keep=0", "index.keep must be positive"),
    ("index.ivf_nlist=-1", "index.ivf_nlist must be 0 (automatic) or more, got -1"),
    ("match.partitions=-1", "match.partitions must be 0 (automatic) or more, got -1"),
    ("match.reciprocal=maybe", "expects bool"),
    ("match.reciprocal_pool=0", "match.reciprocal_pool must be positive"),
    ("audit.short_sample=0", "audit.short_sample must be positive"),
])
def test_bad_overrides_name_the_problem(override, words):
    with pytest.raises(UserError, match=None) as e:
        load_config(LOCAL, [override])
    assert words in str(e.value)


def test_a_reciprocal_pool_smaller_than_k_is_refused():
    with pytest.raises(UserError) as e:
        load_config(LOCAL, ["match.reciprocal=true", "match.k=100", "match.reciprocal_pool=60"])
    assert "match.reciprocal_pool (60) must be at least match.k (100)" in str(e.value)
    load_config(LOCAL, ["match.reciprocal=false", "match.k=100", "match.reciprocal_pool=60"])  # unused: fine


def test_unknown_key_in_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 2\n  learning_rat: 0.1\n")
    with pytest.raises(UserError) as e:
        load_config(str(p))
    assert "train.learning_rat" in str(e.value)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    p = tmp_path / "bad.yaml"
    p.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(str(p))
    p.write_text("- a list\n")
    with pytest.raises(UserError, match="must be a mapping"):
        load_config(str(p))


@pytest.mark.parametrize("uri", ["http://user:secret@mlflow:5000", "http://dapiTOKEN@mlflow:5000",
                                 "https://mlflow:5000/?token=abc", "http://u:p/w@mlflow:5000"])
def test_tracking_uri_with_any_credential_is_refused_without_echoing_it(uri):
    with pytest.raises(UserError, match="must not carry credentials") as e:
        load_config(LOCAL, [f"tracking.uri={uri}"])
    assert "secret" not in str(e.value) and "dapiTOKEN" not in str(e.value) and "abc" not in str(e.value)


def test_tracking_server_uri_and_host_lists_accepted_or_refused():
    assert load_config(LOCAL, ["tracking.uri=http://mlflow:5000"]).tracking.uri == "http://mlflow:5000"
    assert load_config(LOCAL, ["train.hosts=gpu1:4,gpu-2.local:4"]).train.hosts == "gpu1:4,gpu-2.local:4"
    for bad in ("garbage::x", "gpu1", "gpu1:0", "gpu1:4,"):
        with pytest.raises(UserError, match="HOST:SLOTS"):
            load_config(LOCAL, [f"train.hosts={bad}"])
