"""csv/tsv data files (`task_registry.csv_files`): cells kept as written, one type per column from every cell of a
split's files, and rows the reader would fill in or columns it would rename named by file and line."""
from __future__ import annotations

import pytest

import task_registry
from task_registry import DataSourceError, LocalFileSource


def test_csv_and_tsv_cells_are_text_as_written(tmp_path):
    # pandas' defaults read "NA", "null", "None" and empty cells as missing (rendered "None"), and a tsv field
    # starting with `"` as a quoted field that swallowed the following lines (5 rows became 3)
    (tmp_path / "rows.csv").write_text('text,label\nNA,1\nnull,0\n"None, really",1\n,0\n')
    rows = [dict(r) for r in LocalFileSource(tmp_path / "rows.csv").load("train")]
    assert [r["text"] for r in rows] == ["NA", "null", "None, really", ""]
    (tmp_path / "rows.tsv").write_text('text\tlabel\n"quoted start\t1\nplain\t0\nNA\t1\nend"\t0\nlast\t1\n')
    rows = [dict(r) for r in LocalFileSource(tmp_path / "rows.tsv").load("train")]
    assert [r["text"] for r in rows] == ['"quoted start', "plain", "NA", 'end"', "last"]


def test_a_csv_row_with_fewer_cells_than_its_header_is_named(tmp_path):
    # was: read with its missing cells as empty text, silently, the label column turned from numbers to text
    short = tmp_path / "short.csv"
    short.write_text("question,answer,label\nq0,a0,1\n\nq1,a1\nq2,a2,0\n")
    with pytest.raises(DataSourceError, match=r"short.csv' \(split 'train'\), line 4 has 2 of the 3 cells the header "
                                              r"names \(question, answer, label\)"):
        LocalFileSource(short).load("train")
    tsv = tmp_path / "short.tsv"
    tsv.write_text("a\tb\nx\n")
    with pytest.raises(DataSourceError, match=r"short.tsv' \(split 'train'\), line 2 has 1 of the 2 cells") as raised:
        LocalFileSource(tsv).load("train")
    assert str(raised.value).endswith("(`a<tab><tab>c`)")  # was: the csv example `a,,c` for a tab-separated file
    # empty cells written out, a quoted cell over two lines and blank lines are rows of full width
    full = tmp_path / "full.csv"
    full.write_text('question,answer,label\nq0,,1\n\n"q\n1",a1,0\n')
    assert list(LocalFileSource(full).load("train")) == [{"question": "q0", "answer": "", "label": 1},
                                                          {"question": "q\n1", "answer": "a1", "label": 0}]


def test_a_csv_header_that_names_a_column_twice_is_named(tmp_path):
    # was: the reader renamed the second column 'question.1', silently, and templates read the first
    twice = tmp_path / "twice.csv"
    twice.write_text("question,answer,question\nq,a,q2\n")
    with pytest.raises(DataSourceError, match=r"twice.csv' \(split 'train'\): the header names the column\(s\) "
                                              r"'question' more than once"):
        LocalFileSource(twice).load("train")


def test_the_csv_reader_given_data_files_checks_their_shape_as_files_does(tmp_path):
    # was: `hf: csv` with `data_files:` loaded a short row with its missing cells as empty text (only `files:` was
    # checked), and a repeated column as 'name.1'
    short = tmp_path / "short.tsv"
    short.write_text("question\tanswer\tlabel\nq0\ta0\t1\nq1\ta1\n")
    with pytest.raises(DataSourceError, match=r"hub dataset csv: '.*short.tsv' \(split 'train'\), line 3 has 2 of "
                                              r"the 3 cells"):
        task_registry.HFSource("csv", data_files={"train": str(short)}, sep="\t").load("train")
    twice = tmp_path / "twice.csv"
    twice.write_text("q,a,q\nx,y,z\n")
    with pytest.raises(DataSourceError, match=r"twice.csv' \(split 'validation'\): the header names the column"):
        task_registry.HFSource("csv", data_files={"validation": str(twice)}).load("validation")
    full = tmp_path / "full.csv"
    full.write_text("q,label\nx,1\ny,0\n")
    assert task_registry.HFSource("csv", data_files=str(full)).load("train")["label"] == [1, 0]


def test_csv_columns_get_one_type_from_every_row_in_streamed_and_map_style_loads(tmp_path):
    # pandas typed each 10,000-row chunk alone: a column of numbers with a word in row 10,500 failed the map-style
    # load ("Failed to parse string: 'n/a' as a scalar of type int64") and streamed ints, then a string; and a
    # zip code "02134" was read as the number 2134
    path = tmp_path / "rows.csv"
    lines = ["text,count,zip,score,flag"]
    lines += [f"row {i},{'n/a' if i == 10_500 else i},{i:05d},{i / 4},{i % 2 == 0}" for i in range(10_600)]
    path.write_text("\n".join(lines) + "\n")
    loads = [list(LocalFileSource(path).load("train", streaming=streaming)) for streaming in (False, True)]
    assert loads[0] == loads[1] and len(loads[0]) == 10_600
    assert loads[0][7] == {"text": "row 7", "count": "7", "zip": "00007", "score": 1.75, "flag": False}
    assert loads[0][10_500]["count"] == "n/a"
    tsv = tmp_path / "rows.tsv"
    tsv.write_text("text\tlabel\tscore\na\t1\t5.000\nb\t0\t3\n")  # numbers stay numbers, as pandas reads them
    assert list(LocalFileSource(tsv).load("train")) == [{"text": "a", "label": 1, "score": 5.0},
                                                        {"text": "b", "label": 0, "score": 3.0}]


def test_csv_cells_a_number_reader_would_misread_keep_their_column_text(tmp_path):
    # "07" (two digits with a leading zero), "1_000" and " 1" (which Python's float() reads), "inf": text;
    # lower-case true/false: a bool column
    path = tmp_path / "rows.csv"
    path.write_text("text,short,under,ws,big,flag\na,07,1_000, 1,inf,true\nb,08,2_000,2,1,false\n")
    assert list(LocalFileSource(path).load("train")) == [
        {"text": "a", "short": "07", "under": "1_000", "ws": " 1", "big": "inf", "flag": True},
        {"text": "b", "short": "08", "under": "2_000", "ws": "2", "big": "1", "flag": False}]


def test_a_csv_integer_beyond_int64_keeps_its_column_text(tmp_path):
    # such a column was typed int64 ("an integer as str(int) writes it") and the load failed with "Overflow"; a
    # 20-digit identifier is kept as written, as a leading-zero one is, and int64's own bounds stay numbers
    path = tmp_path / "rows.csv"
    top, bottom = 2 ** 63 - 1, -2 ** 63
    path.write_text(f"id,edge\n12345678901234567890123,{top}\n{2 ** 63},{bottom}\n")
    for streaming in (False, True):
        assert list(LocalFileSource(path).load("train", streaming=streaming)) == [
            {"id": "12345678901234567890123", "edge": top}, {"id": str(2 ** 63), "edge": bottom}]
