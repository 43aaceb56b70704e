"""Data sources: where labelled items come from, how they split, how they are fingerprinted."""

from transfuse.data.fingerprint import file_digest
from transfuse.data.images import IMAGE_EXTENSIONS, decode_image, find_images
from transfuse.data.load import load_source
from transfuse.data.source import Source, load_audio_folder, load_image_folder, load_manifest
from transfuse.data.split import split_source
from transfuse.data.text import load_text_folder, load_text_table, read_texts

__all__ = [
    "IMAGE_EXTENSIONS",
    "Source",
    "decode_image",
    "file_digest",
    "find_images",
    "load_audio_folder",
    "load_image_folder",
    "load_manifest",
    "load_source",
    "load_text_folder",
    "load_text_table",
    "read_texts",
    "split_source",
]
