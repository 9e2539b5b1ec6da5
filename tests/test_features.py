import numpy as np
import pytest

from lib.features.fit import feature_inputs, fit_preprocessor
from lib.features.job import transform
from lib.features.preprocessor import Preprocessor

PROFILES = [
    # id, gender, orientation, goal, education, drinking, smoking, location, job, group, interests, age, height, attrs
    ("a", "male", "straight", "long-term", "bachelors", "socially", "never", "Oakland", "chef", "g1",
     ["hiking", "chess"], 30, 180.0, {"diet": "vegan"}),
    ("b", "female", "straight", "long-term", "masters", "never", None, "Oakland", "nurse", "g1",
     ["hiking"], 40, 160.0, {"diet": "anything", "pets": "cats"}),
    ("c", "female", "gay", "casual", None, "socially", "never", "Berkeley", None, "g2",
     None, 20, None, None),
]
DDL = ("id string, gender string, sexual_orientation string, relationship_goal string, education_level string, "
       "drinking_habits string, smoking_habits string, location string, job_title string, group_id string, "
       "interests array<string>, age int, height double, attributes map<string,string>")


@pytest.fixture
def fitted(spark):
    profiles = spark.createDataFrame(PROFILES, DDL)
    music = spark.createDataFrame([("a", "rock"), ("a", "jazz"), ("b", "rock"), ("b", "rock")],
                                  "user_id string, genre string")
    inputs = feature_inputs(profiles, music)
    return inputs, fit_preprocessor(inputs, "v1", max_categories=1, max_multi_hot=5)


def test_fit_by_hand(fitted):
    _, pre = fitted
    # Top-1 vocabularies: most frequent value, ties broken by value.
    assert pre.categorical["gender"] == ["female"]
    assert pre.categorical["location"] == ["Oakland"]
    assert pre.categorical["education_level"] == ["bachelors"]
    assert pre.attributes == {"diet": ["anything"], "pets": ["cats"]}
    assert pre.multi_hot == {"interests": ["hiking", "chess"], "genres": ["rock", "jazz"]}
    assert pre.numeric["age"] == pytest.approx([30.0, np.std([30, 40, 20])])
    assert pre.numeric["height"] == pytest.approx([170.0, 10.0])


def test_vector_of_one_profile_by_hand(fitted):
    _, pre = fitted
    v = pre.transform_one({"gender": "male", "location": "Oakland", "interests": ["chess", "surfing"],
                           "genres": ["jazz"], "age": 40, "height": None, "attributes": {"diet": "vegan"}})
    names = pre.feature_names()
    on = {names[i]: float(v[i]) for i in np.flatnonzero(v)}
    assert on == pytest.approx({
        "cat:gender=<other>": 1.0, "cat:sexual_orientation=<missing>": 1.0,
        "cat:relationship_goal=<missing>": 1.0, "cat:education_level=<missing>": 1.0,
        "cat:drinking_habits=<missing>": 1.0, "cat:smoking_habits=<missing>": 1.0,
        "cat:location=Oakland": 1.0, "cat:job_title=<missing>": 1.0, "cat:group_id=<missing>": 1.0,
        "attr:diet=<other>": 1.0, "attr:pets=<missing>": 1.0,
        "multi:interests=chess": 1.0, "multi:genres=jazz": 1.0,
        "num:age": (40 - 30) / np.std([30, 40, 20]), "num:height=<missing>": 1.0})
    assert len(v) == pre.dim == len(names)


def test_spark_transform_equals_single_profile_transform(fitted, tmp_path):
    inputs, pre = fitted
    pre.save(str(tmp_path / "p.json"))
    loaded = Preprocessor.load(str(tmp_path / "p.json"))
    assert loaded == pre and loaded.feature_names() == pre.feature_names()
    bulk = {r["id"]: np.array(r["features"]) for r in transform(inputs, loaded).collect()}
    for row in inputs.collect():
        one = pre.transform_one(row.asDict())
        np.testing.assert_allclose(bulk[row["id"]], one, atol=1e-6, err_msg=str((row, [
            (pre.feature_names()[i], bulk[row["id"]][i]) for i in np.flatnonzero(bulk[row["id"]] != one)])))
    assert not any(n.startswith(("cat:name", "cat:bio", "cat:avatar")) for n in pre.feature_names())
