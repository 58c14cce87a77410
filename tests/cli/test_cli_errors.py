"""`fail_cleanly` turns the project's own errors into one line and exit code 1, and lets everything else (a bug)
through with its traceback."""

from __future__ import annotations

import pytest
import typer

from tailsynth.cli.common import fail_cleanly
from tailsynth.errors import ConfigError, DataError, MissingInputError, ServiceError


@pytest.mark.parametrize("error", [DataError("a.csv: row 3: bad label"), ConfigError("--loss 'x': unknown"),
                                   MissingInputError("m/model.pt: missing"), ServiceError("host unreachable")])
def test_own_errors_become_one_line(error, capsys):
    with pytest.raises(typer.Exit) as exit_info, fail_cleanly():
        raise error
    assert exit_info.value.exit_code == 1
    err = capsys.readouterr().err
    assert err.strip() == f"error: {error}" and "Traceback" not in err


@pytest.mark.parametrize("error", [KeyError("classes"), ValueError("operands could not be broadcast"),
                                   FileNotFoundError("/tmp/x")])
def test_other_errors_are_not_hidden(error):
    with pytest.raises(type(error)), fail_cleanly():
        raise error
