"""Music: ABC tune splitting, the bar/meter checker, whole-tune generation, MIDI/WAV export."""

import json
import wave
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit.checkpoint import RunDir
from rnnkit.cli import main
from rnnkit.data.abc import (
    check_bars,
    normalize_key,
    parse_fields,
    parse_meter,
    scan_body,
    split_tunes,
)
from rnnkit.data.readers import IRISH_TUNES, bundled_path
from rnnkit.data.vocab import Vocab
from rnnkit.tasks.language_model import LanguageModelConfig
from rnnkit.tasks.music import (
    MusicModel,
    MusicTraining,
    prepare_tune,
    read_tunes,
    split_train_valid,
)
from rnnkit.train import TrainConfig, fit, seed_everything

JIG = "X:1\nT:Alpha\nM:6/8\nL:1/8\nK:D Major\nA|dfa afd|gbg fed|ecA ABc|d3 d2:|"
REEL = "X:2\nT:Beta\nM:C|\nL:1/8\nK:G Major\nGABc dBGB|cABG A2dc|BGGB AFD2|G2B2 G2:|"
WALTZ = "X:3\nT:Gamma\nM:3/4\nL:1/8\nK:A Dorian\nE2A2 A2|B2c2 d2|e4 dc|A6:|"
TUNES = [JIG, REEL, WALTZ]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models step by step: one thread is many times faster than two on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# splitting files into tunes
# ---------------------------------------------------------------------------------------------
def test_split_blank_line_ends_a_tune_and_x_starts_one():
    text = "A file header line\n\n" + JIG + "\n\n\n" + REEL + "\n" + WALTZ + "\n"
    tunes = split_tunes(text)
    assert [t.text for t in tunes] == TUNES  # free text skipped; X: without blank line splits
    assert [t.number for t in tunes] == [1, 2, 3]
    assert tunes[0].line == 3 and tunes[0].title == "Alpha"


def test_split_comments_neither_start_nor_end_a_tune():
    text = (
        "% a comment before anything\n"
        "X:7\n"
        "T:Commented % the name\n"
        "%%MIDI program 1\n"
        "M:6/8\n"
        "K:D\n"
        "% between music lines\n"
        "dfa afd|  % trailing comment\n"
        "%\n"
        "gbg fed|\n"
    )
    (tune,) = split_tunes(text)
    assert tune.text == "X:7\nT:Commented\nM:6/8\nK:D\ndfa afd|\ngbg fed|"
    assert tune.fields == {"X": "7", "T": "Commented", "M": "6/8", "K": "D"}


def test_split_continuation_lines_are_joined():
    text = "X:1\nT:Long\nM:2/4\nK:G\nGABc|\\\ndefg|\\\n\nfedc|\n\nX:2\nK:D\nDE|\n"
    first, second = split_tunes(text)
    # the backslash joins lines, and a blank line right after one does not end the tune
    assert first.text.split("\n")[4:] == ["GABc|defg|", "fedc|"]
    assert second.text == "X:2\nK:D\nDE|"


def test_split_field_continuation_and_crlf():
    text = "X:1\r\nT:First part\r\n+:second part   \r\nK:C\r\nCDEF|\r\n"
    (tune,) = split_tunes(text)
    assert tune.title == "First part second part"
    assert "\r" not in tune.text and tune.text.endswith("CDEF|")


def test_split_missing_x_gets_a_number_and_free_text_is_skipped():
    text = JIG + "\n\nT:No number\nM:2/4\nK:G\nGABc|\n\nJust some notes about the tunes.\n"
    tunes = split_tunes(text)
    assert len(tunes) == 2
    assert tunes[1].text.startswith("X:2\nT:No number")
    assert tunes[1].number is None and tunes[1].line == 8


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="X:TK1 \n%\\ab|", max_size=80))
def test_split_never_fails_and_tunes_have_no_blank_lines(text):
    for tune in split_tunes(text):
        assert tune.text.startswith("X:")
        assert "\n\n" not in tune.text and not tune.text.endswith("\n")


_line = st.text(alphabet="abcdefgABCDEFG|:2/ ", min_size=1, max_size=20).filter(
    lambda s: s.strip() and s == s.rstrip()
)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(_line, min_size=1, max_size=4), min_size=1, max_size=4))
def test_split_round_trips_tunes_joined_by_blank_lines(bodies):
    tunes = [f"X:{i + 1}\nT:t{i}\nK:D\n" + "\n".join(b) for i, b in enumerate(bodies)]
    assert [t.text for t in split_tunes("\n\n".join(tunes) + "\n")] == tunes


def test_bundled_tunes():
    tunes = read_tunes(bundled_path(IRISH_TUNES))
    assert len(tunes) == 724
    assert all(t.text.startswith("X:") and "K:" in t.text for t in tunes)
    assert prepare_tune(tunes[0]).split("\n")[:3] == ["X:1", "T:Alexander's", "M:C|"]
    train, valid = split_train_valid(tunes, 0.1, seed=0)
    assert len(valid) == 72 and len(train) == 652
    assert sorted(t.line for t in train + valid) == [t.line for t in tunes]
    assert split_train_valid(tunes, 0.1, seed=0) == (train, valid)


# ---------------------------------------------------------------------------------------------
# header values, the lexer, the bar/meter checker
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "given_, expected",
    [("D", "D Major"), ("Em", "E Minor"), ("A dor", "A Dorian"), ("Dmix", "D Mixolydian"),
     ("F#m", "F# Minor"), ("bb", "Bb Major"), ("G Major", "G Major")],
)  # fmt: skip
def test_normalize_key(given_, expected):
    assert normalize_key(given_) == expected


def test_bad_key_and_meter_are_value_errors():
    with pytest.raises(ValueError, match="not a key"):
        normalize_key("H major")
    with pytest.raises(ValueError, match="not a meter"):
        parse_meter("6/x")
    assert parse_meter("C") == parse_meter("C|") == 1 and parse_meter("6/8") == Fraction(3, 4)
    assert parse_meter("2+3+2/8") == Fraction(7, 8) and parse_meter("none") is None


def test_lexer_reports_line_and_column():
    tokens, errors = scan_body("dfa afd|\ngbq fed|", first_line=6)
    assert errors == ["line 7, column 3: unexpected 'q'"]
    kinds = [t.kind for t in tokens if t.kind not in ("space", "eol")]
    assert kinds.count("note") == 11 and kinds.count("bar") == 2
    _, errors = scan_body("(3AB|c>|[CEG")
    assert any("tuplet '(3' needs 3 notes, found 2" in e for e in errors)
    assert any("broken rhythm" in e for e in errors)
    assert any("unexpected '['" in e for e in errors)


def test_lexer_knows_abc_elements():
    body = '"Am"!trill!~A2 {g}B/c/ (3def [DFA]2 z2 | [K:G] .A-A (AB) y [1 F>G :|2 [M:2/4] A<B Z2 |]'
    _, errors = scan_body(body)
    assert errors == []


def _durations(body, header="X:1\nM:6/8\nL:1/8\nK:D\n"):
    return [b.duration for b in check_bars(header + body).bars]


def test_bar_durations_count_lengths_tuplets_broken_rhythm_and_chords():
    assert _durations("A|dfa afd|") == [Fraction(1, 8), Fraction(3, 4)]
    assert _durations("d2 e/f/ g3|A3/2B/ c2 d2|") == [Fraction(3, 4)] * 2
    assert _durations("(3ABc d2|") == [Fraction(1, 2)]  # (3 = 3 in the time of 2
    assert _durations("A>B c<d e2|[DFA]2 [D2F]A B|") == [Fraction(3, 4), Fraction(3, 4)]
    assert _durations('{g}A2 !trill!B "G"c3|') == [Fraction(3, 4)]
    assert _durations("dfa [L:1/4] d f|") == [Fraction(3, 8) + Fraction(1, 2)]
    # no L: field: the default unit is 1/16 below 3/4 (here 2/4)
    assert _durations("ABcd efga|", header="X:1\nM:2/4\nK:D\n") == [Fraction(1, 2)]


def test_consistent_tunes():
    for tune in TUNES:
        result = check_bars(tune)
        assert result.consistent, (tune, result.problems)
    jig = check_bars(JIG)
    assert [b.verdict for b in jig.bars] == ["edge", "full", "full", "full", "edge"]
    # pickups and closing bars next to repeats and numbered endings, endings on their own line
    murphy = (
        "X:4\nM:C|\nL:1/8\nK:D\n(3ABc|d2AF d2AF|dcdf ecAg|fgaf gfed|c2A2 A2|\n"
        "[1 fg|afdg faa2|d2dc d2:|\n[2 (3ABc|d2AF d2AF|d2dc d2|]"
    )
    assert check_bars(murphy).consistent, check_bars(murphy).problems
    assert check_bars("X:5\nM:3/4\nL:1/4\nK:C\nC D E|Z2|F G A|[M:2/4] B c|").consistent


def test_inconsistent_tunes_name_the_bar():
    long_bar = check_bars("X:1\nM:6/8\nL:1/8\nK:D\ndfa afd|gbg fedc|ecA ABc|d3 d3|")
    assert not long_bar.consistent
    assert long_bar.problems == ["line 5: bar 2 lasts 7/8 of a whole note, the meter asks for 3/4"]
    short_mid = check_bars("X:1\nM:6/8\nL:1/8\nK:D\ndfa afd|gbg f|ecA ABc|d3 d3|")
    assert [b.verdict for b in short_mid.bars] == ["full", "short", "full", "full"]
    assert not check_bars("X:1\nM:6/8\nL:1/8\nK:D\ndfa|").consistent  # no full bar at all
    assert not check_bars("X:1\nL:1/8\nK:D\ndfa afd|dfa afd|").consistent  # no meter
    assert not check_bars("X:1\nM:6/8\nL:1/8\nK:D\ndfa afd|dfa afq|").consistent  # lexer error


def test_most_bundled_tunes_are_consistent():
    tunes = read_tunes(bundled_path(IRISH_TUNES))
    share = sum(check_bars(t.text).consistent for t in tunes) / len(tunes)
    assert share > 0.97, share  # the checker agrees with how real tunes are written


# ---------------------------------------------------------------------------------------------
# the model: tune boundaries, training stream, generation
# ---------------------------------------------------------------------------------------------
def _model(hidden=64) -> MusicModel:
    vocab = Vocab.build("".join(TUNES))
    cfg = LanguageModelConfig(embed_size=16, hidden_size=hidden, dropout=0.0)
    return MusicModel(cfg, vocab)


def test_tunes_are_marked_with_bos_and_eos():
    model = _model(8)
    v = model.vocab
    stream = model.stream_ids([JIG, REEL]).tolist()
    assert stream[0] == v.bos_id and stream[len(JIG) + 1] == v.eos_id
    assert stream[len(JIG) + 2] == v.bos_id and stream[-1] == v.eos_id
    assert v.decode(stream) == JIG + REEL


def test_training_stream_reshuffles_tunes_per_epoch_deterministically():
    model = _model(8)
    task = MusicTraining(model, TUNES * 4, TUNES, batch_size=2, bptt=16, seed=3)
    again = MusicTraining(model, TUNES * 4, TUNES, batch_size=2, bptt=16, seed=3)
    e0, e1 = task.epoch_ids(0), task.epoch_ids(1)
    assert sorted(e0.tolist()) == sorted(task.train_ids.tolist())
    assert not torch.equal(e0, e1)
    assert torch.equal(task.batch(1, 2)[0], again.batch(1, 2)[0])
    assert task.batches_per_epoch() == again.batches_per_epoch() > 0
    inputs, targets = task.batch(0, 0)
    assert inputs.shape == (2, 16) and torch.equal(inputs[:, 1:], targets[:, :-1])


def test_resumed_training_continues_bit_for_bit(tmp_path):
    def run(steps, path, resume=False):
        seed_everything(0)
        model = _model(16)
        task = MusicTraining(model, TUNES * 4, TUNES, batch_size=8, bptt=32, seed=1)
        assert task.batches_per_epoch() == 3  # so 12 steps are 4 epochs, each reshuffled
        cfg = TrainConfig(max_steps=steps, eval_every=4, progress=False, schedule="constant")
        run_dir = RunDir(path) if resume else RunDir.create(path, exist_ok=True)
        fit(model, task, cfg, run_dir, resume=resume)
        return model.state_dict()

    straight = run(12, tmp_path / "a")
    run(8, tmp_path / "b")  # stops in the middle of epoch 2
    resumed = run(12, tmp_path / "b", resume=True)
    for name, value in straight.items():
        assert torch.equal(value, resumed[name]), name


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """A tiny LSTM that has learnt the three tunes by heart (real trainer, real stream)."""
    seed_everything(0)
    model = _model()
    task = MusicTraining(model, TUNES * 4, TUNES, batch_size=4, bptt=32, seed=0)
    cfg = TrainConfig(
        lr=1e-2, max_steps=250, eval_every=250, progress=False, schedule="constant", seed=0
    )
    summary = fit(model, task, cfg, RunDir.create(tmp_path_factory.mktemp("music") / "run"))
    assert summary["last"]["loss"] < 0.1, summary
    return model.eval()


def test_generation_stops_at_the_end_of_a_tune(memorised):
    for number, tune in enumerate(TUNES, 1):
        out = memorised.generate_tune(number=number, temperature=0)
        assert out.ended == "eos" and out.complete
        assert out.text == tune  # greedy decoding recalls the tune and stops right after it


def test_generation_from_a_prompt_and_with_fixed_fields(memorised):
    out = memorised.generate_tune("X:2\nT:Beta\n", temperature=0)
    assert out.text == REEL
    fixed = memorised.generate_tune(number=1, meter="3/4", key="Em", title="New", temperature=0)
    fields = parse_fields(fixed.text)
    assert (fields["T"], fields["M"], fields["K"]) == ("New", "3/4", "E Minor")
    header = fixed.text.split("K:E Minor")[0]
    assert header.count("M:") == 1 and header.count("T:") == 1
    body = memorised.generate_tune("dfa", number=1, temperature=0)
    assert body.text.startswith("X:1\nT:Alpha\nM:6/8\nL:1/8\nK:D Major\ndfa")


def test_generation_is_cut_off_at_max_chars(memorised):
    out = memorised.generate_tune(number=2, temperature=0, max_chars=30)
    assert out.ended == "max_chars" and not out.complete and len(out.text) <= 30
    a = memorised.generate_tunes(3, seed=5, temperature=1.0)
    b = memorised.generate_tunes(3, seed=5, temperature=1.0)
    assert [t.text for t in a] == [t.text for t in b] and [t.number for t in a] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# parsing with music21, MIDI, WAV, piano roll
# ---------------------------------------------------------------------------------------------
def test_midi_has_the_expected_notes(tmp_path):
    pytest.importorskip("music21")
    from rnnkit.music_export import abc_to_midi, read_midi_notes

    # key of G: every F is F#; L:1/8 so a 2 is a quarter note
    scale = "X:1\nT:Scale\nM:4/4\nL:1/8\nK:G\nG2 A2 B2 c2|d2 e2 f2 g2|]"
    notes = read_midi_notes(abc_to_midi(scale, tmp_path / "scale.mid"))
    assert [p for _, _, p in notes] == [67, 69, 71, 72, 74, 76, 78, 79]
    assert [s for s, _, _ in notes] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert all(d == pytest.approx(1.0) for _, d, _ in notes)
    # a chord, accidentals, a tie across the bar line, and a repeat played out
    tune = "X:2\nT:Bits\nM:4/4\nL:1/8\nK:C\n|:[CEG]4 ^F2 =F2|c8-|c2 z6:|"
    notes = read_midi_notes(abc_to_midi(tune, tmp_path / "bits.mid"))
    once = [(0, 2, 60), (0, 2, 64), (0, 2, 67), (2, 1, 66), (3, 1, 65), (4, 5, 72)]
    twice = once + [(s + 12, d, p) for s, d, p in once]
    assert [(round(s, 3), round(d, 3), p) for s, d, p in notes] == twice
    # ABC repeats: ":|" without "|:" goes back to the previous ":|", not to the start; endings
    parts = "X:3\nT:Parts\nM:2/4\nL:1/4\nK:C\nC D:|E F:|\nG A|[1 B c:|[2 d e|]"
    notes = read_midi_notes(abc_to_midi(parts, tmp_path / "parts.mid"))
    assert [p for _, _, p in notes] == [
        60,
        62,
        60,
        62,
        64,
        65,
        64,
        65,
        67,
        69,
        71,
        72,
        67,
        69,
        74,
        76,
    ]
    notes = read_midi_notes(abc_to_midi(parts, tmp_path / "once.mid", expand_repeats=False))
    assert [p for _, _, p in notes] == [60, 62, 64, 65, 67, 69, 71, 72, 74, 76]


def test_validate_tune_verdicts():
    pytest.importorskip("music21")
    from rnnkit.music_export import validate_tune

    good = validate_tune(JIG)
    assert good.parses and good.midi and good.meter_consistent and good.notes == 21
    bad = validate_tune("X:1\nT:x\nM:6/8\nL:1/8\nK:G\nhijk lmn|\n")
    assert not bad.parses and bad.errors[0] == "line 6, column 1: unexpected 'h'"
    unclosed = validate_tune("X:1\nT:x\nM:6/8\nL:1/8\nK:G\n[GBd dBG|ABc|")
    assert not unclosed.parses
    assert validate_tune("X:1\nT:x\nM:6/8\nK:G\n").errors[-1] == "music21 found no notes"


def test_wav_end_to_end(tmp_path):
    pytest.importorskip("music21")
    from rnnkit.music_export import (
        INSTALL_AUDIO,
        abc_to_midi,
        find_synthesizer,
        midi_to_wav,
        read_midi_notes,
    )

    if find_synthesizer() is None:
        pytest.skip(f"no synthesizer: {INSTALL_AUDIO}")
    midi = abc_to_midi(JIG, tmp_path / "jig.mid", tempo=240)
    wav = midi_to_wav(midi, tmp_path / "jig.wav")
    with wave.open(str(wav)) as w:
        seconds = w.getnframes() / w.getframerate()
        assert w.getsampwidth() == 2 and w.getnchannels() in (1, 2)
    # 24 eighth notes played twice (the repeat) = 24 quarters at 240 per minute = 6 s, + release
    music = max(s + d for s, d, _ in read_midi_notes(midi)) * 60 / 240
    assert music == 6.0 and music <= seconds < music + 4


def test_piano_roll_png(tmp_path):
    pytest.importorskip("music21")
    from rnnkit.music_export import piano_roll

    path = piano_roll(REEL, tmp_path / "reel.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def test_cli_train_and_generate_tunes(tmp_path, capsys):
    data = tmp_path / "tunes.abc"
    data.write_text(("\n\n".join(TUNES) + "\n\n") * 4, encoding="utf-8")
    run = tmp_path / "run"
    tiny = ["--hidden-size", "16", "--embed-size", "8", "--bptt", "16", "--batch-size", "2"]
    code = main(["-q", "train", "music", "--data", str(data), "--dry-run", "--no-progress",
                 "--out", str(run), *tiny])  # fmt: skip
    assert code == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["task"] == "music" and saved["train"]["minutes"] == 12.0
    capsys.readouterr()
    out = tmp_path / "tunes"
    code = main(["-q", "generate", str(run), "--tunes", "2", "--out", str(out), "--json",
                 "--max-chars", "120", "--seed", "0", "--meter", "6/8", "--key", "D"])  # fmt: skip
    assert code == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["number"] for r in records] == [1, 2]
    for r in records:
        assert "M:6/8\n" in r["text"] or r["ended"] == "max_chars"
        assert (out / f"tune_{r['number']:03d}.abc").read_text() == r["text"] + "\n"
    assert (out / "tunes.abc").is_file()
    assert main(["-q", "evaluate", str(run), "--json"]) == 0  # the run's validation tunes
    result = json.loads(capsys.readouterr().out)
    assert result["tunes"] == 1 and result["tokens"] in {len(t) + 1 for t in TUNES}
    # --midi writes files: without --out it is a usage error
    assert main(["-q", "generate", str(run), "--midi"]) == 2
    assert "give --out DIR" in capsys.readouterr().err


def test_infer_answers_music_and_generate_requests():
    from rnnkit.inference import GenerateRequest, MusicRequest, MusicResult

    torch.manual_seed(0)
    model = _model(hidden=16).eval()
    result = model.infer(
        MusicRequest.from_json({"tunes": 2, "key": "D", "seed": 4, "max_chars": 80})
    )
    tunes = model.generate_tunes(2, seed=4, key="D", max_chars=80)
    assert [t["abc"] for t in result.tunes] == [t.text for t in tunes]
    assert [t["ended"] for t in result.tunes] == [t.ended for t in tunes]
    assert MusicResult.from_json(result.to_json()) == result
    assert model.infer(GenerateRequest("X:1\n", max_tokens=5, seed=1)).tokens == 5
