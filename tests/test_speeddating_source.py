"""The Speed Dating adapter on real rows: tests/fixtures/speeddating_sample.csv (every row of
waves 5 and 6 of speed_dating_waves_1_15.csv, original header, latin-1) and, when present,
the full file in ../shared/datasets/speeddating.

Expected values are worked out here from the raw CSV with the csv module, never from the
adapter's output.
"""
import csv
import os

import pytest

from lib.errors import UserError
from lib.ids import stable_uuid
from lib.sources.speeddating import read_speeddating
from tests.conftest import FIXTURES, ROOT

SAMPLE = os.path.join(FIXTURES, "speeddating_sample.csv")
FULL = os.path.join(os.path.dirname(ROOT), "shared", "datasets", "speeddating", "speed_dating_waves_1_15.csv")
ACTIVITIES = ["sports", "tvsports", "exercise", "dining", "museums", "art", "hiking", "gaming", "clubbing",
              "reading", "tv", "theater", "movies", "concerts", "music", "shopping", "yoga"]


def raw_rows(path):
    with open(path, encoding="latin-1", newline="") as f:
        return list(csv.DictReader(f))


def expected(rows):
    """({profile id: (gender, age, interests or None)}, {interaction id: event}, rows without pid)."""
    people = {}
    for r in rows:  # own rows: the first one says who they are
        if r["iid"] not in people:
            rated = [a for a in ACTIVITIES if r[a] != ""]
            interests = [a for a in ACTIVITIES if r[a] != "" and float(r[a]) >= 7] if rated else None
            people[r["iid"]] = ({"0": "female", "1": "male"}[r["gender"]], int(r["age"]) if r["age"] else None,
                                interests)
    other = {"0": "male", "1": "female"}
    out = {stable_uuid(f"speeddating:iid:{k}"): v for k, v in people.items()}
    slots = {(r["wave"], r["id"], r["gender"]) for r in rows}
    for r in rows:  # seen only as a partner: partner-side columns, the other gender
        if r["pid"] and r["pid"] not in people:
            out.setdefault(stable_uuid(f"speeddating:iid:{r['pid']}"),
                           (other[r["gender"]], int(r["age_o"]) if r["age_o"] else None, None))
        opposite = str(1 - int(r["gender"]))
        if not r["pid"] and (r["wave"], r["partner"], opposite) not in slots:
            name = f"speeddating:wave:{r['wave']}:partner:{r['partner']}:gender:{opposite}"
            out.setdefault(stable_uuid(name), (other[r["gender"]], int(r["age_o"]) if r["age_o"] else None, None))

    events = {}
    pairs = {(r["iid"], r["pid"]) for r in rows}
    for r in rows:
        if not r["pid"]:
            continue
        sides = [(r["iid"], r["pid"], r["dec"])]
        if (r["pid"], r["iid"]) not in pairs:
            sides.append((r["pid"], r["iid"], r["dec_o"]))
        for a, b, dec in sides:
            events[stable_uuid(f"speeddating:dec:{a}:{b}")] = {"1": "like", "0": "pass"}[dec]
            if r["match"] == "1":
                events[stable_uuid(f"speeddating:match:{a}:{b}")] = "match"
    return out, events, sum(1 for r in rows if not r["pid"])


def check_against_file(result, rows):
    persons, events, no_pid = expected(rows)
    profiles = result.profiles.collect()
    assert all(p["_corrupt_record"] is None for p in profiles)
    got = {p["id"]: p for p in profiles}
    assert len(got) == len(profiles) == len(persons)  # ids unique
    for pid, (gender, age, interests) in persons.items():
        p = got[pid]
        assert (p["gender"], p["age"], p["interests"]) == (gender, age, interests)
        assert p["_age_raw"] == (str(age) if age is not None else None)
        assert p["sexual_orientation"] == "straight" and p["setup_complete"] is True
    inter = result.interactions.collect()
    assert len({r["id"] for r in inter}) == len(inter)
    assert {r["id"]: r["event"] for r in inter} == events
    assert all(r["created_at"] is None for r in inter)
    assert result.info["rows_without_pid"] == no_pid
    assert result.info["persons"] == len(persons) and result.info["malformed_rows"] == 0
    assert result.music is None and result.complete is True
    return got, inter


def test_sample_matches_the_file(spark, tmp_path):
    rows = raw_rows(SAMPLE)
    result = read_speeddating(spark, SAMPLE, str(tmp_path))
    got, inter = check_against_file(result, rows)
    # 29 people with rows of their own; the woman met as partner 7 of wave 5 has no row and no pid.
    assert len({r["iid"] for r in rows}) == 29 and len(got) == 30
    assert result.info["persons_only_as_partner"] == 1 and result.info["rows_without_pid"] == 10
    ghost = got[stable_uuid("speeddating:wave:5:partner:7:gender:0")]
    assert (ghost["gender"], ghost["age"], ghost["interests"]) == ("female", None, None)

    # Worked out by hand from the rows of iid 112 and 131:
    p = got[stable_uuid("speeddating:iid:112")]
    assert (p["gender"], p["age"], p["relationship_goal"], p["education_level"], p["job_title"]) == \
        ("female", 20, "seemed like a fun night out", "social science, psychologist", "social work")
    assert p["interests"] == ["sports", "exercise", "museums", "art", "hiking", "gaming", "clubbing", "reading",
                              "theater", "movies", "concerts", "music"]
    assert p["attributes"]["race"] == "other" and p["attributes"]["zipcode"] == "07605"
    assert p["attributes"]["from"] == "New Jersey" and "income" not in p["attributes"]
    assert p["attributes"]["music"] == "10" and p["attributes"]["yoga"] == "6"
    p = got[stable_uuid("speeddating:iid:131")]
    assert (p["gender"], p["age"], p["relationship_goal"], p["education_level"], p["job_title"]) == \
        ("male", 19, "to meet new people", "engineering", "undecided")
    assert p["interests"] == ["reading", "tv", "movies", "concerts"]
    assert p["attributes"]["income"] == "17378.00" and p["attributes"]["zipcode"] == "10002"
    assert p["attributes"]["race"] == "asian/pacific islander/asian-american"
    # iid 112 said yes to 122, who said yes too: like and match, from each side.
    events = {(r["user_id"], r["profile_id"], r["event"]) for r in inter}
    a, b = stable_uuid("speeddating:iid:112"), stable_uuid("speeddating:iid:122")
    assert {(a, b, "like"), (a, b, "match"), (b, a, "like"), (b, a, "match")} <= events
    assert (a, stable_uuid("speeddating:iid:123"), "pass") in events


def test_one_sided_rows_and_people_only_seen_as_partners(spark, tmp_path):
    """Without the row (112, 122) and without every row of 113, the other sides still give
    every decision once, and 113 becomes a person known only from partner-side columns."""
    with open(SAMPLE, encoding="latin-1", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    header = next(csv.reader([lines[0]]))
    iid, pid = header.index("iid"), header.index("pid")

    def dropped(line):
        r = next(csv.reader([line]))
        return r[iid] == "113" or (r[iid], r[pid]) == ("112", "122")

    kept = [ln for ln in lines[1:] if not dropped(ln)]
    assert len(kept) == len(lines) - 1 - 1 - sum(1 for r in raw_rows(SAMPLE) if r["iid"] == "113")
    path = tmp_path / "fewer.csv"
    path.write_text(lines[0] + "".join(kept), encoding="latin-1")
    rows = raw_rows(str(path))
    result = read_speeddating(spark, str(path), str(tmp_path))
    got, inter = check_against_file(result, rows)
    assert result.info["persons_only_as_partner"] == 2
    # The same decisions as the whole sample: each of the removed rows has its reverse row.
    _, all_events, _ = expected(raw_rows(SAMPLE))
    assert {r["id"]: r["event"] for r in inter} == all_events
    p = got[stable_uuid("speeddating:iid:113")]
    own = next(r for r in raw_rows(SAMPLE) if r["iid"] == "113")
    assert (p["gender"], p["age"], p["interests"]) == ("female", int(own["age"]), None)


def test_ids_are_stable_across_reads(spark, tmp_path):
    a = read_speeddating(spark, SAMPLE, str(tmp_path / "a"))
    b = read_speeddating(spark, SAMPLE, str(tmp_path / "b"))
    for part in ("profiles", "interactions"):
        ids_a = sorted(r["id"] for r in getattr(a, part).select("id").collect())
        ids_b = sorted(r["id"] for r in getattr(b, part).select("id").collect())
        assert ids_a == ids_b and len(set(ids_a)) == len(ids_a)


@pytest.mark.skipif(not os.path.isfile(FULL), reason="../shared/datasets/speeddating is not here")
def test_full_file(spark, tmp_path):
    rows = raw_rows(FULL)
    result = read_speeddating(spark, FULL, str(tmp_path))
    got, inter = check_against_file(result, rows)
    assert len(got) == 415  # 414 iids and the partner without an iid (wave 5, partner 7)
    assert result.info["persons_only_as_partner"] == 1 and result.info["rows_without_pid"] == 10
    # Every date paired a man and a woman, which is why partner-only people take the other gender.
    gender = {r["iid"]: r["gender"] for r in rows}
    assert all(gender[r["iid"]] != gender[r["pid"]] for r in rows if r["pid"])
    assert result.info["same_gender_dates"] == 0
    with_pid = [r for r in rows if r["pid"]]
    by_event = {e: 0 for e in ("like", "pass", "match")}
    for r in inter:
        by_event[r["event"]] += 1
    assert by_event == {"like": sum(r["dec"] == "1" for r in with_pid), "pass": sum(r["dec"] == "0" for r in with_pid),
                        "match": sum(r["match"] == "1" for r in with_pid)}


def test_missing_file(spark, tmp_path):
    with pytest.raises(UserError, match="not found; check source.path"):
        read_speeddating(spark, str(tmp_path / "nope.csv"), str(tmp_path))


def test_a_folder_instead_of_the_file(spark, tmp_path):
    with pytest.raises(UserError, match="is not a readable file"):
        read_speeddating(spark, str(tmp_path), str(tmp_path))


def test_missing_column(spark, tmp_path):
    with open(SAMPLE, encoding="latin-1", newline="") as f:
        text = f.read()
    path = tmp_path / "nodec.csv"
    path.write_text(text.replace(",dec_o,", ",decision_o,", 1), encoding="latin-1", newline="")
    with pytest.raises(UserError, match=r"is not a Speed Dating file: column\(s\) dec_o missing"):
        read_speeddating(spark, str(path), str(tmp_path))


def test_bad_rows_and_latin1_text(spark, tmp_path):
    with open(SAMPLE, encoding="latin-1", newline="") as f:
        lines = f.read().splitlines(keepends=True)
    header = next(csv.reader([lines[0]]))
    first = next(csv.reader([lines[1]]))
    assert first[header.index("iid")] == "112"
    first[header.index("from")] = "Montréal"
    bad_iid = list(first)
    bad_iid[header.index("iid")] = "x12"
    out = tmp_path / "bad.csv"
    with open(out, "w", encoding="latin-1", newline="") as f:
        f.write(lines[0])
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(first)
        f.writelines(lines[2:])
        w.writerow(bad_iid)
        f.write("1,2,3\r\n")
    result = read_speeddating(spark, str(out), str(tmp_path))
    profiles = result.profiles.collect()
    bad = sorted(p["_corrupt_record"] for p in profiles if p["_corrupt_record"] is not None)
    assert len(bad) == 2 and result.info["malformed_rows"] == 2
    assert any(b == "iid is not a whole number: x12" for b in bad) and any(b.startswith("1,2,3") for b in bad)
    p = next(p for p in profiles if p["id"] == stable_uuid("speeddating:iid:112"))
    assert p["attributes"]["from"] == "Montréal"
