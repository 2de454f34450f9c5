"""Use a trained model: an exported run as a Hugging Face Hub model folder (`hub`), and predictions on raw image
files (`api`; the command line `dermlib predict` is `__main__`). Three lines:

    import dermlib.predict
    model = dermlib.predict.DermModel.from_pretrained("path/to/export")   # offline, CPU, eval mode
    preds = dermlib.predict.predict(model, ["lesion.jpg"])                # one Prediction per image

Not a pipeline step: it builds on `train` (the model) and `data` (the preprocessing), and the evaluation step's
export (`dermlib export RUN_DIR OUT_DIR`) writes its folders.
"""

from dermlib.predict.api import Gallery, GalleryError, Prediction, load_gallery, load_image, predict
from dermlib.predict.hub import DermModel, ModelConfig, ModelFormatError, Preprocessing

__all__ = ["DermModel", "Gallery", "GalleryError", "ModelConfig", "ModelFormatError", "Prediction", "Preprocessing",
           "load_gallery", "load_image", "predict"]
