"""Run a model written by `transfuse export` with only onnxruntime, numpy and pillow installed:

    python predict_onnx.py model.onnx photo.png [more.png ...]
"""
import json
import math
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

session = ort.InferenceSession(sys.argv[1])
meta = session.get_modelmeta().custom_metadata_map  # classes and how each input's pixels are made
classes, inputs = json.loads(meta["classes"]), json.loads(meta["inputs"])


def pixels(img, image_size, crop_pct, interpolation):
    scale = math.floor(image_size / crop_pct)  # the short side, before the centre crop
    w, h = img.size
    size = (scale, int(scale * h / w)) if w <= h else (int(scale * w / h), scale)
    img = img.resize(size, getattr(Image.Resampling, interpolation.upper()))
    left, top = round((size[0] - image_size) / 2), round((size[1] - image_size) / 2)
    img = img.crop((left, top, left + image_size, top + image_size))
    return np.asarray(img, np.float32).transpose(2, 0, 1)[None] / 255  # (1, 3, S, S) in [0, 1]


for path in sys.argv[2:]:
    img = Image.open(path).convert("RGB")
    p = session.run([meta["output"]], {name: pixels(img, **prep) for name, prep in inputs.items()})[0][0]
    print(f"{path}\t{classes[p.argmax()]}\t{p.max():.3f}")  # a probability, or an SVM's score
