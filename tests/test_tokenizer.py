"""t2t_mtl.tokenizer: T5's real vocabulary loads offline with T5's ids; trained tokenizers follow T5's layout.

The reference for ids is SentencePiece itself (`SentencePieceProcessor` on the same `spiece.model`) plus
the ids T5 is known to produce ("Hello world" → 8774 296 </s>, <extra_id_0> = 32099).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import sentencepiece as spm

import task_registry
from t2t_mtl.cli import main as cli_main
from t2t_mtl.tokenizer import (
    MAX_VOCAB_SIZE,
    MIN_VOCAB_SIZE,
    TokenizerLoadError,
    TokenizerTrainingError,
    load_tokenizer,
    mixture_texts,
    own_encoding_problem,
    rendered_texts,
    train_tokenizer,
)

PAD, EOS, UNK = 0, 1, 2


@pytest.fixture(scope="module")
def t5_tokenizer(t5_tokenizer_dir):
    return load_tokenizer(t5_tokenizer_dir)


@pytest.fixture(scope="module")
def t5_sentencepiece(t5_tokenizer_dir):
    return spm.SentencePieceProcessor(model_file=str(Path(t5_tokenizer_dir) / "spiece.model"))


@pytest.fixture(scope="module")
def procedural_corpus() -> list[str]:
    task_registry.load_builtin_tasks()
    return list(mixture_texts("procedural", max_examples=40))


def test_t5_vocabulary_loads_offline_with_t5_ids(t5_tokenizer):
    tok = t5_tokenizer
    assert len(tok) == 32100
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (PAD, EOS, UNK)
    assert tok("Hello world").input_ids == [8774, 296, EOS]
    assert tok.convert_tokens_to_ids("<extra_id_0>") == 32099
    assert tok.convert_tokens_to_ids("<extra_id_99>") == 32000
    # a sentinel inside text is one token, as in T5 span corruption
    assert tok("Hello <extra_id_0> world").input_ids == [8774, 32099, 296, EOS]
    assert tok.decode([8774, 296, EOS], skip_special_tokens=True) == "Hello world"


def test_t5_padding_is_right_side_with_pad_zero(t5_tokenizer):
    batch = t5_tokenizer(["Hello world", "a"], padding=True)
    assert batch["input_ids"] == [[8774, 296, EOS], [3, 9, EOS]]
    batch = t5_tokenizer(["Hello world", "Hi"], padding="max_length", max_length=5)
    assert batch["input_ids"][0] == [8774, 296, EOS, PAD, PAD]
    assert batch["attention_mask"][0] == [1, 1, 1, 0, 0]
    assert batch["input_ids"][1][-3:] == [PAD, PAD, PAD] and batch["input_ids"][1][1] == EOS
    # truncation keeps the EOS at the end
    truncated = t5_tokenizer("one two three four five six", max_length=4, truncation=True).input_ids
    assert len(truncated) == 4 and truncated[-1] == EOS


def test_pipeline_ids_match_sentencepiece_on_rendered_builtin_tasks(t5_tokenizer, t5_sentencepiece,
                                                                      shared_data_dir, procedural_corpus):
    previous = task_registry.get_data_dir()
    task_registry.set_data_dir(shared_data_dir)
    try:
        task_registry.load_builtin_tasks()
        tasks = [task_registry.get_task(name) for name in task_registry.get_mixture("real").flatten()]
        datasets_to_check = [task.to_dataset(task.splits[0], max_examples=8) for task in tasks]
    finally:
        task_registry.set_data_dir(previous)
    checked = 0
    for dataset in datasets_to_check:
        tokenized = task_registry.tokenize_dataset(dataset, t5_tokenizer, max_input_length=4096,
                                                   max_target_length=4096)
        for example in tokenized:
            assert example["input_ids"] == t5_sentencepiece.encode(example["inputs"]) + [EOS], example["inputs"]
            assert example["labels"] == t5_sentencepiece.encode(example["targets"]) + [EOS], example["targets"]
            checked += 1
    for text in procedural_corpus[:300]:
        assert t5_tokenizer(text).input_ids == t5_sentencepiece.encode(text) + [EOS], text
    assert checked >= 100


@pytest.mark.parametrize("text", ["6½ cups", "a\ufffdb", "ﬁne ﬂour", "ｈｅｌｌｏ ｗｏｒｌｄ", "cafe\u0301", "zero\u200bwidth",
                                  "Ⅸ", "x\u00a0y", "  two  spaces\t\nand\u3000more "])
def test_t5_vocabulary_normalises_text_as_t5s_sentencepiece_does(t5_tokenizer, t5_sentencepiece, text):
    # was: the shared tokenizer.json has no normalizer and was loaded instead of spiece.model, so NFKC
    # compatibility characters, decomposed accents and zero-width spaces became <unk> (T5 reads "ﬁne" as "fine")
    assert t5_tokenizer(text).input_ids == t5_sentencepiece.encode(text) + [EOS]


def test_trained_tokenizer_has_t5_layout_and_round_trips(tmp_path, procedural_corpus):
    tok = train_tokenizer(procedural_corpus, tmp_path / "tok", vocab_size=400)
    assert (tmp_path / "tok" / "spiece.model").exists() and (tmp_path / "tok" / "tokenizer_config.json").exists()
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tok" / "spiece.model"))
    pieces = sp.get_piece_size()
    assert pieces <= 400
    assert len(tok) == pieces + 100
    assert [sp.id_to_piece(i) for i in range(3)] == ["<pad>", "</s>", "<unk>"]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (PAD, EOS, UNK)
    assert getattr(tok, "bos_token_id", None) is None
    assert tok.convert_tokens_to_ids("<extra_id_0>") == pieces + 99
    assert tok.convert_tokens_to_ids("<extra_id_99>") == pieces
    reloaded = load_tokenizer(tmp_path / "tok")
    for text in procedural_corpus[:200]:
        ids = tok(text).input_ids
        assert ids == sp.encode(text) + [EOS]                  # same ids as the SentencePiece model
        assert ids[-1] == EOS and UNK not in ids                # the corpus is fully covered
        assert tok.decode(ids, skip_special_tokens=True) == " ".join(text.split())  # lossless round trip
        assert reloaded(text).input_ids == ids
    assert reloaded("12 <extra_id_0> 34").input_ids.count(pieces + 99) == 1
    # digits are split, so every number is spelled digit by digit
    assert all(len(piece.strip("▁")) <= 1 for piece in tok.tokenize("123 4567"))


def test_special_tokens_in_the_corpus_take_no_pieces(tmp_path, procedural_corpus):
    # was: span corruption's sentinels were trained on as text, so pieces such as "extra", "<" and ">" (never
    # produced: the tokenizer reads a sentinel as its own id) took places in the vocabulary
    import re

    plain = [text for text in procedural_corpus[:300] if text.strip()]
    marked = [f"{text} <extra_id_{k % 100}> {text}</s><extra_id_{k % 7}><pad><unk>" for k, text in enumerate(plain)]
    spaced = [re.sub(r"<extra_id_\d+>|</s>|<pad>|<unk>", " ", text) for text in marked]
    tok = train_tokenizer(marked, tmp_path / "marked", vocab_size=300)
    train_tokenizer(spaced, tmp_path / "spaced", vocab_size=300)
    assert (tmp_path / "marked" / "spiece.model").read_bytes() == (tmp_path / "spaced" / "spiece.model").read_bytes()
    pieces = [tok.convert_ids_to_tokens(i) for i in range(len(tok) - 100)]
    assert not [p for p in pieces[3:] if "extra" in p or "<" in p or ">" in p]
    assert tok("a <extra_id_3> b").input_ids.count(tok.convert_tokens_to_ids("<extra_id_3>")) == 1


def test_train_tokenizer_bad_input_raises_clear_errors(tmp_path):
    with pytest.raises(TokenizerTrainingError, match="empty"):
        train_tokenizer(["", "   "], tmp_path / "a", vocab_size=100)
    with pytest.raises(TokenizerTrainingError, match="text #1 is a int"):
        train_tokenizer(["fine", 3], tmp_path / "b", vocab_size=100)
    with pytest.raises(TokenizerTrainingError, match="vocab_size"):
        train_tokenizer(["abcdefghijklmnopqrstuvwxyz " * 5], tmp_path / "c", vocab_size=10)


def test_load_tokenizer_bad_paths(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TokenizerLoadError, match="holds no tokenizer files"):
        load_tokenizer(empty)
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(TokenizerLoadError, match="is a file"):
        load_tokenizer(file)
    with pytest.raises(TokenizerLoadError, match="could not load tokenizer") as raised:
        load_tokenizer(str(tmp_path / "does-not-exist"))
    assert ".." not in str(raised.value)  # (the hub's own message ends in a full stop)


def test_a_sentencepiece_model_file_loads_as_t5s_vocabulary(t5_tokenizer_dir, t5_sentencepiece, tmp_path):
    # seqio's vocabulary is a SentencePiece model file (SentencePieceVocabulary('.../spiece.model')): tokenizer.path
    # or --tokenizer naming it was refused ("is a file; pass the folder") by preview, and passed train's config
    # checks, to be refused once DeepSpeed was up
    from t2t_mtl.config import ConfigFileError, check_paths, config_from_dict

    model_file = Path(t5_tokenizer_dir) / "spiece.model"
    tokenizer = load_tokenizer(model_file)
    assert len(tokenizer) == 32100 and (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (
        PAD, EOS, UNK)
    text = "Translate English to German: The house is wonderful."
    assert tokenizer(text).input_ids == t5_sentencepiece.encode(text) + [EOS]
    assert tokenizer.convert_tokens_to_ids("<extra_id_0>") == 32099
    tokenizer.save_pretrained(str(tmp_path / "copy"))  # (as a run keeps it in its tokenizer/)
    assert load_tokenizer(tmp_path / "copy")(text).input_ids == tokenizer(text).input_ids

    def paths_checked(path):
        check_paths(config_from_dict({"model": {"dims": {"d_model": 8}}, "tokenizer": {"path": str(path)},
                                      "data": {"tasks": ["parity"]},
                                      "training": {"output_dir": str(tmp_path / "run")}}))

    paths_checked(model_file)
    (tmp_path / "vocab.txt").write_text("x")
    with pytest.raises(ConfigFileError, match=r"config key 'tokenizer.path' names .*vocab.txt': tokenizer path .* is a "
                                              r"file; pass the folder that holds it \(a file is a tokenizer only as a "
                                              r"SentencePiece model, \*.model"):
        paths_checked(tmp_path / "vocab.txt")


def test_a_missing_tokenizer_folder_is_named_as_a_folder_not_a_hub_id(tmp_path, monkeypatch):
    # was: "could not load tokenizer 'runs/quickstart/tokenizer': Repo id must be in the form 'repo_name' or
    # 'namespace/repo_name' ... Use `repo_type` argument if needed" for the README tour's --tokenizer of a run not
    # trained yet: the hub's complaint about a name that can only be a path
    monkeypatch.chdir(tmp_path)
    for path in ("runs/quickstart/tokenizer", "./tok", str(tmp_path / "tok")):
        with pytest.raises(TokenizerLoadError) as raised:
            load_tokenizer(path)
        assert str(raised.value) == (
            f"could not load tokenizer {path!r}: no such folder (a hub name is 'name' or 'owner/name'); pass a folder "
            f"saved with save_pretrained, such as a run's tokenizer/ or one `t2t-mtl tokenizer train` wrote")
    (tmp_path / "runs").mkdir()  # 'runs/nope', written as a hub id, is a path in the runs/ folder here
    with pytest.raises(TokenizerLoadError) as raised:
        load_tokenizer("runs/nope")
    assert str(raised.value) == (
        "could not load tokenizer 'runs/nope': no such folder (runs/ is a folder here, so it is read as a path in it, "
        "not as a hub name); pass a folder saved with save_pretrained, such as a run's tokenizer/ or one `t2t-mtl "
        "tokenizer train` wrote")


def test_a_missing_sentencepiece_model_file_is_named_as_a_file_not_a_folder(tmp_path, monkeypatch):
    # was: "could not load tokenizer './tok/spiece.model': no such folder (a hub name is ...); pass a folder ...":
    # a *.model path names a SentencePiece model file, which load_tokenizer takes
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TokenizerLoadError) as raised:
        load_tokenizer("./tok/spiece.model")
    assert str(raised.value) == (
        "could not load tokenizer './tok/spiece.model': no such file; pass an existing SentencePiece model file "
        "(*.model, such as T5's spiece.model) or a folder saved with save_pretrained")


def test_a_run_folder_given_as_tokenizer_names_its_tokenizer_folder(tmp_path, procedural_corpus):
    # was: `tasks preview parity --tokenizer runs/my` (or tokenizer.path: runs/my) said only that the folder "holds no
    # tokenizer files" and to train one, while the run's own tokenizer sat in runs/my/tokenizer
    run = tmp_path / "runs" / "my"
    train_tokenizer(procedural_corpus, run / "tokenizer", vocab_size=200)
    (run / "checkpoints" / "step-00000010").mkdir(parents=True)
    for given in (run, run / "checkpoints" / "step-00000010"):
        with pytest.raises(TokenizerLoadError) as raised:
            load_tokenizer(given)
        assert f"pass {run / 'tokenizer'}" in str(raised.value) and "a run's folder" in str(raised.value)
    assert len(load_tokenizer(run / "tokenizer")) == 300  # 200 pieces + 100 sentinels


def test_a_tokenizer_config_without_its_vocabulary_is_refused_by_name(tmp_path, procedural_corpus):
    # was: transformers 5 built a 104-token T5 tokenizer from tokenizer_config.json alone (every word <unk>), and
    # training went on with it
    train_tokenizer(procedural_corpus, tmp_path / "tok", vocab_size=200)
    config = (tmp_path / "tok" / "tokenizer_config.json").read_bytes()
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "tokenizer_config.json").write_bytes(config)
    with pytest.raises(TokenizerLoadError, match=r"partial' has no vocabulary .* no tokenizer.json or spiece.model"):
        load_tokenizer(tmp_path / "partial")
    for name in ("spiece.model", "tokenizer.json"):  # either file alone beside the config is enough
        (tmp_path / name).mkdir()
        (tmp_path / name / "tokenizer_config.json").write_bytes(config)
        (tmp_path / name / name).write_bytes((tmp_path / "tok" / name).read_bytes())
        reference = load_tokenizer(tmp_path / "tok")("12 + 3").input_ids
        assert load_tokenizer(tmp_path / name)("12 + 3").input_ids == reference


def test_a_bare_vocabulary_without_t5s_special_ids_is_refused_by_name(tmp_path):
    # was: a SentencePiece model with its default ids (unk 0, bos 1, eos 2) loaded "as T5's": eos 2, and <pad> added
    # after the sentinels (so <extra_id_0> was not the last id), while a T5 built from dims pads with 0, ends with 1
    from transformers import T5Tokenizer

    (tmp_path / "sp").mkdir()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([f"the quick brown fox {i}" for i in range(50)]),
                                   model_prefix=str(tmp_path / "sp" / "spiece"), vocab_size=40,
                                   hard_vocab_limit=False, minloglevel=2)
    with pytest.raises(TokenizerLoadError, match=r"sp/spiece.model has <unk>, <s>, </s> at ids 0-2, not T5's "
                                                 r"<pad>, </s>, <unk> .* pad_id=0 eos_id=1 unk_id=2"):
        load_tokenizer(tmp_path / "sp")
    (tmp_path / "json").mkdir()
    T5Tokenizer(**T5Tokenizer.convert_to_native_format(vocab_file=str(tmp_path / "sp" / "spiece.model"))
                ).backend_tokenizer.save(str(tmp_path / "json" / "tokenizer.json"))
    with pytest.raises(TokenizerLoadError, match=r"json/tokenizer.json has <unk>, <s>, </s> at ids 0-2"):
        load_tokenizer(tmp_path / "json")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "spiece.model").write_bytes(b"not a model")
    with pytest.raises(TokenizerLoadError, match=r"could not read .*broken/spiece.model"):
        load_tokenizer(tmp_path / "broken")


def test_a_bare_tokenizer_json_of_another_model_is_refused_by_name(tmp_path):
    # was: loaded as T5 regardless, failing inside transformers with a raw TypeError
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(["hello world this is a test"] * 10, trainers.BpeTrainer(vocab_size=60,
                                                                                    special_tokens=["[UNK]"]))
    (tmp_path / "bpe").mkdir()
    bpe.save(str(tmp_path / "bpe" / "tokenizer.json"))
    with pytest.raises(TokenizerLoadError, match=r"bpe/tokenizer.json holds a BPE model .* save_pretrained"):
        load_tokenizer(tmp_path / "bpe")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerLoadError, match=r"could not read .*broken/tokenizer.json"):
        load_tokenizer(tmp_path / "broken")


def _saved_tokenizer(folder: Path, model: str, post_processor: str) -> Path:
    """A tokenizer a user builds with the `tokenizers` library and saves with save_pretrained: a byte-level BPE or a
    lower-casing WordPiece whose pad is id 0 and EOS id 1 (as a model built from dims needs), its post-processor
    adding nothing, EOS alone, or BERT's [CLS] in front and EOS at the end."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = ["a quick brown fox", "jumps over the lazy dog", "what is 3 plus 4?"] * 5
    if model == "bpe":
        specials, names = ["<pad>", "</s>", "<unk>"], {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        tok.pre_tokenizer, tok.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    else:
        specials = ["[PAD]", "[SEP]", "[UNK]", "[CLS]"]
        names = {"pad_token": "[PAD]", "eos_token": "[SEP]", "unk_token": "[UNK]", "cls_token": "[CLS]"}
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer, tok.decoder = normalizers.BertNormalizer(lowercase=True), decoders.WordPiece()
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(vocab_size=120, special_tokens=specials)
    tok.train_from_iterator(texts, trainer)
    eos, cls = specials[1], specials[3] if len(specials) > 3 else None
    single = {"none": None, "eos": f"$A {eos}", "cls": f"{cls} $A {eos}"}[post_processor]
    if single:
        tok.post_processor = processors.TemplateProcessing(
            single=single, special_tokens=[(t, tok.token_to_id(t)) for t in (cls, eos) if t and t in single])
    PreTrainedTokenizerFast(tokenizer_object=tok, **names).save_pretrained(folder)
    return folder


def test_own_encoding_problem_names_special_tokens_other_than_a_final_eos(tmp_path, t5_tokenizer, procedural_corpus):
    # was: training read every text as its tokens + EOS (append_eos) while evaluation, validation and predict used
    # the tokenizer's own encoding: without EOS, or with [CLS] in front, for these tokenizers, with no word
    from transformers import ByT5Tokenizer

    assert t5_tokenizer("Hello world").input_ids == [8774, 296, EOS]  # T5's own: tokens, then </s>
    train_tokenizer(procedural_corpus, tmp_path / "trained", vocab_size=200)
    for fine in (t5_tokenizer, load_tokenizer(tmp_path / "trained"), ByT5Tokenizer(),
                 load_tokenizer(_saved_tokenizer(tmp_path / "bpe_eos", "bpe", "eos")),
                 load_tokenizer(_saved_tokenizer(tmp_path / "wp_eos", "wordpiece", "eos"))):
        assert own_encoding_problem(fine) is None, fine
    bpe = load_tokenizer(_saved_tokenizer(tmp_path / "bpe", "bpe", "none"))
    assert bpe("a").input_ids == bpe("a", add_special_tokens=False).input_ids  # no </s>: a target would never end
    assert own_encoding_problem(bpe) == "encodes a text 'a' as a: it adds no </s> at its end"
    wordpiece = load_tokenizer(_saved_tokenizer(tmp_path / "wp", "wordpiece", "cls"))
    assert wordpiece.convert_ids_to_tokens(wordpiece("A").input_ids) == ["[CLS]", "a", "[SEP]"]
    assert own_encoding_problem(wordpiece) == "encodes a text 'a' as [CLS] a [SEP]: it puts [CLS] in front of it"


def test_cli_trains_on_a_mixture(tmp_path, capsys):
    out = tmp_path / "cli_tok"
    code = cli_main(["tokenizer", "train", "--mixture", "procedural_train", "--out", str(out),
                     "--vocab-size", "300", "--max-examples", "30"])
    assert code == 0
    tok = load_tokenizer(out)  # (mutation testing: the pieces counted with the sentinels passed the test)
    assert capsys.readouterr().out == (f"saved a T5 tokenizer with {len(tok)} tokens ({len(tok) - 100} pieces + 100 "
                                       f"sentinels) to {out}\n")
    texts = list(mixture_texts("procedural_train", max_examples=30))
    assert all(UNK not in tok(text).input_ids for text in texts)
    assert tok.convert_tokens_to_ids("<extra_id_0>") == len(tok) - 1


def test_comma_separated_tasks_select_the_texts_of_each(tmp_path):
    # was refused ("unknown task 'parity,count_word'"), while `mixture show` took the same selection
    both = list(mixture_texts("parity, count_word", max_examples=5))
    assert both == list(mixture_texts("parity", max_examples=5)) + list(mixture_texts("count_word", max_examples=5))


def test_cli_unknown_mixture_names_close_matches(tmp_path, capsys):
    code = cli_main(["tokenizer", "train", "--mixture", "procedurl", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "did you mean 'procedural'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # was: an empty --out folder left behind
    (tmp_path / "afile").write_text("x")
    assert cli_main(["tokenizer", "train", "--mixture", "procedural", "--out", str(tmp_path / "afile")]) == 2
    assert "--out" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "x"


def test_cli_names_a_too_small_vocab_size_by_its_option(tmp_path, capsys):
    # was: "train_tokenizer: vocab_size=0 is too small", after every task was rendered
    assert cli_main(["tokenizer", "train", "--mixture", "procedural", "--out", str(tmp_path / "t"),
                     "--vocab-size", "0"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --vocab-size must be at least 4 (pad, eos, unk and one piece), got 0\n"
    assert not (tmp_path / "t").exists()
    # was: "error: INVALID_ARGUMENT: cannot parse ... as int." from SentencePiece, naming no option
    assert cli_main(["tokenizer", "train", "--mixture", "procedural", "--out", str(tmp_path / "t"),
                     "--vocab-size", str(2 ** 31)]) == 2
    assert capsys.readouterr().err == (f"error: --vocab-size must be at most {2 ** 31 - 1} (SentencePiece's limit), "
                                       f"got {2 ** 31}\n")
    with pytest.raises(TokenizerTrainingError, match=f"vocab_size={2 ** 31} is too large; SentencePiece takes at most"):
        train_tokenizer(["a b c"], tmp_path / "lib", vocab_size=2 ** 31)


@pytest.mark.parametrize("options, refused", [
    (["--vocab-size", str(MIN_VOCAB_SIZE)], None), (["--vocab-size", str(MAX_VOCAB_SIZE)], None),
    (["--max-examples", "1"], None), (["--max-examples", "0"], "--max-examples must be at least 1, got 0")])
def test_cli_takes_the_options_up_to_their_limits_and_refuses_past_them(options, refused, tmp_path, monkeypatch,
                                                                        capsys):
    # mutation testing: --vocab-size refused at either limit and --max-examples 0 let through (read as every row)
    # passed every test, whose values lay well inside or past the limits
    import t2t_mtl.tokenizer as tokenizer

    trained = []
    monkeypatch.setattr(tokenizer, "mixture_texts", lambda *args, **kwargs: ["a b c"])
    monkeypatch.setattr(tokenizer, "train_tokenizer", lambda texts, out, vocab_size: trained.append(vocab_size) or
                        ["piece"] * 104)
    code = cli_main(["tokenizer", "train", "--mixture", "parity", "--out", str(tmp_path / "t"), *options])
    err = capsys.readouterr().err
    assert (code, err, len(trained)) == ((0, "", 1) if refused is None else (2, f"error: {refused}\n", 0))

def test_cli_an_out_folder_that_cannot_be_written_is_a_one_line_error(tmp_path, capsys, locked_folder):
    # was: the PermissionError's traceback and exit code 1 (bad input exits 2 with a message naming it)
    out = tmp_path / locked_folder
    code = cli_main(["tokenizer", "train", "--mixture", "procedural", "--out", str(out), "--vocab-size", "100",
                     "--max-examples", "3"])
    err = capsys.readouterr().err
    assert code == 2 and f"error: --out {out}: the tokenizer could not be written" in err
    assert "Permission denied" in err and "Traceback" not in err


def test_cli_refuses_to_overwrite_a_non_empty_out_folder_unless_told(tmp_path, capsys):
    # was: a second `tokenizer train --out tok` silently replaced the first tokenizer in tok/
    out = tmp_path / "tok"
    out.mkdir()
    (out / "spiece.model").write_bytes(b"an earlier tokenizer")
    options = ["--mixture", "parity", "--vocab-size", "100", "--max-examples", "5"]
    argv = ["tokenizer", "train", "--out", str(out), *options]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out} is not empty") and "--overwrite" in err and err.count("\n") == 1, err
    assert (out / "spiece.model").read_bytes() == b"an earlier tokenizer"
    assert cli_main([*argv, "--overwrite"]) == 0
    assert load_tokenizer(out).convert_tokens_to_ids("<extra_id_0>") == len(load_tokenizer(out)) - 1
    (tmp_path / "empty").mkdir()
    assert cli_main(["tokenizer", "train", "--out", str(tmp_path / "empty"), *options]) == 0  # no earlier output


def test_cli_trains_on_yaml_tasks_from_a_tasks_dir(tmp_path, capsys):
    # was: no --tasks-dir, so a tokenizer could not be trained on a YAML task
    from engine_helpers import write_yaml_task

    tasks_dir = write_yaml_task(tmp_path / "tasks", "yaml_tok")
    with task_registry.isolated_registry():
        code = cli_main(["tokenizer", "train", "--mixture", "yaml_tok", "--tasks-dir", str(tasks_dir),
                         "--out", str(tmp_path / "tok"), "--vocab-size", "100"])
    assert code == 0, capsys.readouterr().err
    tok = load_tokenizer(tmp_path / "tok")
    assert UNK not in tok("reverse_words: pear fox mango").input_ids


def test_cli_reads_a_hub_tasks_rows_from_the_data_dir(tmp_path, capsys, monkeypatch):
    # mutation testing: --data-dir checked but never set for the rows passed every test, whose tasks read files
    import json

    monkeypatch.setattr(task_registry.sources, "_data_dir", None)  # (the command sets it; restored after the test)
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "hub_tok.yaml").write_text(
        "name: hub_tok\nsplits: [train]\nsource: {hf: tok_hub}\ntemplates:\n"
        "  - {name: t, jinja: 'say {{ text }} ||| {{ text }}'}\n")
    rows = tmp_path / "data" / "tok_hub" / "default"
    rows.mkdir(parents=True)
    (rows / "train.jsonl").write_text("".join(json.dumps({"text": f"zebra{i} kiwi"}) + "\n" for i in range(5)))
    with task_registry.isolated_registry():
        code = cli_main(["tokenizer", "train", "--mixture", "hub_tok", "--tasks-dir", str(tmp_path / "tasks"),
                         "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "tok"), "--vocab-size", "40"])
    assert code == 0, capsys.readouterr().err
    assert UNK not in load_tokenizer(tmp_path / "tok")("say zebra3 kiwi").input_ids

def test_each_row_gives_the_corpus_one_rendering_by_the_template_its_seed_picks():
    # mixture_texts said each task's rows were "rendered with all of its templates" and `tokenizer train --seed`
    # "seed of procedural tasks": a row is rendered once, by the template `random.Random(f"{seed}:{row}")` picks, and
    # the seed leaves the generated rows alone
    import random

    task_registry.load_builtin_tasks()
    task = task_registry.get_task("sort_numbers")
    rows = task.load_rows("train", max_rows=6)
    for seed in (0, 1):
        expected = []
        for index in range(len(rows)):
            template = task.templates[random.Random(f"{seed}:{index}").randrange(len(task.templates))]
            example = template.render(rows[index], rng=random.Random(f"{seed}:{index}"))
            expected += [example.inputs, example.targets, *(example.answer_choices or [])]
        assert list(mixture_texts("sort_numbers", max_examples=6, seed=seed)) == expected


def test_rendered_texts_give_each_rows_texts_in_row_order_across_batches():
    # the texts are read a batch of columns at a time (a dict per row cost ~40x the CPU); SentencePiece's result
    # depends on the order of its lines, so each row's input, target and answer choices come in the order of the rows
    import datasets

    rows = [{"inputs": f"in {i}", "targets": f"out {i}", "answer_choices": [f"a{i}", f"b{i}"] if i % 3 else None}
            for i in range(7)]
    expected = [text for row in rows for text in (row["inputs"], row["targets"], *(row["answer_choices"] or ()))]
    dataset = datasets.Dataset.from_list(rows)
    assert list(rendered_texts(dataset, batch_size=3)) == expected
    assert list(rendered_texts(dataset)) == expected


def _t5_layout_sentencepiece(path: Path, **options) -> Path:
    """A SentencePiece model with T5's special ids, trained on a few sentences with `options` (its kind, ...)."""
    path.parent.mkdir()
    spm.SentencePieceTrainer.train(sentence_iterator=iter([f"the quick brown fox {i} jumps" for i in range(50)]),
                                   model_prefix=str(path.with_suffix("")), vocab_size=400, hard_vocab_limit=False,
                                   pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2, **options)
    return path


@pytest.mark.parametrize("options, unlike_t5", [
    ({"model_type": "bpe"}, "model_type BPE"), ({"model_type": "word"}, "model_type WORD"),
    ({"byte_fallback": True}, "byte_fallback true"), ({"add_dummy_prefix": False}, "add_dummy_prefix false"),
    ({"remove_extra_whitespaces": False}, "remove_extra_whitespaces false"),
    ({"treat_whitespace_as_suffix": True}, "treat_whitespace_as_suffix true"),
    ({"model_type": "bpe", "add_dummy_prefix": False}, "model_type BPE, add_dummy_prefix false")])
def test_a_sentencepiece_model_t5s_tokenizer_would_encode_otherwise_is_refused_by_name(tmp_path, options, unlike_t5):
    # was: loaded "as T5's" (a unigram model without byte fallback) whatever its kind, so its ids were not the ones
    # SentencePiece gives ("fox" cut otherwise by a BPE model's merges, "é" <unk> where byte fallback writes its bytes,
    # a space put in front and extra spaces removed where the model's options say not to)
    from transformers import T5Tokenizer

    model = _t5_layout_sentencepiece(tmp_path / "sp" / "spiece.model", **options)
    reference = spm.SentencePieceProcessor(model_file=str(model))
    wrapped = T5Tokenizer(**T5Tokenizer.convert_to_native_format(vocab_file=str(model)))
    text = "the  quick brown foxes jumped ë "
    assert wrapped(text).input_ids != reference.encode(text) + [EOS]  # (what loading it as T5's would give)
    for target in (model, model.parent):
        with pytest.raises(TokenizerLoadError) as refused:
            load_tokenizer(target)
        assert str(refused.value) == (
            f"{model} is a SentencePiece model that T5's tokenizer (unigram, no byte fallback, a space put in front, "
            f"extra spaces removed) would encode otherwise than SentencePiece does: {unlike_t5}; train a unigram one "
            f"with `t2t-mtl tokenizer train`, or pass a folder saved with save_pretrained by the transformers "
            f"tokenizer made for it")


@pytest.mark.parametrize("options", [{}, {"model_type": "char"}])
def test_a_unigram_or_character_sentencepiece_model_gives_sentencepieces_own_ids(tmp_path, options):
    model = _t5_layout_sentencepiece(tmp_path / "sp" / "spiece.model", **options)
    reference = spm.SentencePieceProcessor(model_file=str(model))
    for target in (model, model.parent):
        tokenizer = load_tokenizer(target)
        for text in ("the quick brown fox 17 jumps", "fox é jumps 日本", "  quick\tbrown  "):
            assert tokenizer(text).input_ids == reference.encode(text) + [EOS]


def test_the_corpus_blanks_only_what_the_tokenizer_reads_as_one_special_token(t5_tokenizer):
    # was: every <extra_id_N> was blanked, <extra_id_100> and up (and <extra_id_07>) too, though a tokenizer of 100
    # sentinels reads them as text: their letters, which it does encode as pieces, were kept out of its training
    from t2t_mtl.tokenizer import _corpus_lines

    written = ["<extra_id_0>", "<extra_id_99>", "<extra_id_100>", "<extra_id_250>", "<extra_id_07>", "</s>", "<pad>",
               "<unk>", "<extra_id_>"]
    special = set(t5_tokenizer.all_special_ids)  # (T5's own tokenizer: the same 100 sentinels as a trained one)

    def one_special_token(text: str) -> bool:
        ids = t5_tokenizer(text, add_special_tokens=False).input_ids
        return len(ids) == 1 and ids[0] in special

    for text in written:
        assert list(_corpus_lines([f"a {text} b"])) == ["a   b" if one_special_token(text) else f"a {text} b"], text
    assert sum(map(one_special_token, written)) == 5  # (the reference itself: 2 sentinels, </s>, <pad>, <unk>)
