"""The registry of real dermatology datasets: what each one is, where to get it, its licence and citation, and the
folder layout its loader expects (the dataset's own layout, as downloaded).

Licence statuses say where the statement comes from: "file" (stated inside the distributed file), "repo" (stated in
a public README or loader), "unverified" (commonly reported, not confirmed from a primary page). Check the official
page before you use a dataset. Nothing here downloads anything; `dermlib.data.load_source(name, root)` reads a folder
you downloaded yourself.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd


@dataclass(frozen=True)
class SourceSpec:
    """One real dataset: identity, modality, how to get it, and the layout `load_source` reads."""

    name: str
    title: str
    modality: str  # "dermoscopic" | "clinical"
    homepage: str
    download: str  # step-by-step instructions, ending in the folder to pass as `root`
    licence: str
    licence_status: str  # "file" | "repo" | "unverified"
    citation: str
    layout: str  # the files the loader reads, relative to root
    notes: str = ""

    def how_to_get(self) -> str:
        """One line for error messages: where to download the dataset."""
        return f"get {self.title} from {self.homepage} ({self.download})"


_ISIC_CLI = "install the ISIC archive client (`pip install isic-cli`), then run "

SOURCES: dict[str, SourceSpec] = {
    "ham10000": SourceSpec(
        name="ham10000", title="HAM10000", modality="dermoscopic",
        homepage="https://doi.org/10.7910/DVN/DBW86T",
        download="Harvard Dataverse doi:10.7910/DVN/DBW86T: download HAM10000_images_part_1.zip, "
                 "HAM10000_images_part_2.zip and HAM10000_metadata(.csv) and unzip both parts into one folder",
        licence="CC BY-NC 4.0 per the ISIC/Dataverse listings, CC BY-NC-SA 4.0 per the Dataverse download listing "
                "(public notes disagree: check the Dataverse page)",
        licence_status="repo",
        citation="Tschandl P., Rosendahl C., Kittler H. The HAM10000 dataset, a large collection of multi-source "
                 "dermatoscopic images of common pigmented skin lesions. Sci. Data 5, 180161 (2018). "
                 "doi:10.1038/sdata.2018.161",
        layout="HAM10000_metadata.csv (or the Dataverse file HAM10000_metadata without extension); "
               "HAM10000_images_part_1/ISIC_*.jpg and HAM10000_images_part_2/ISIC_*.jpg (searched recursively)",
        notes="All 10,015 images are also part of ISIC 2019 (same lesion_id HAM_*).",
    ),
    "bcn20000": SourceSpec(
        name="bcn20000", title="BCN20000", modality="dermoscopic",
        homepage="https://www.isic-archive.com (collection 249)",
        download=_ISIC_CLI + "`isic image download --collections 249 <root>` (images + metadata.csv); "
                 "an archive metadata export bcn20000_metadata_<date>.csv is read too",
        licence="CC-BY-NC (Hospital Clínic de Barcelona)", licence_status="file",
        citation="Hernández-Pérez C. et al. BCN20000: Dermoscopic lesions in the wild. Sci. Data 11, 641 (2024); "
                 "Combalia M. et al. BCN20000: Dermoscopic lesions in the wild. arXiv:1908.02288 (2019)",
        layout="metadata.csv or bcn20000_metadata_*.csv (ISIC archive export: isic_id, diagnosis_1..3, ...); "
               "<isic_id>.jpg anywhere below root",
        notes="12,413 of these images are also in ISIC 2019 (there with lesion_id BCN_*).",
    ),
    "isic2019": SourceSpec(
        name="isic2019", title="ISIC 2019 Challenge (training set)", modality="dermoscopic",
        homepage="https://challenge.isic-archive.com/data/#2019",
        download="download ISIC_2019_Training_Input.zip, ISIC_2019_Training_GroundTruth.csv and "
                 "ISIC_2019_Training_Metadata.csv from the challenge page; unzip into one folder",
        licence="CC BY-NC 4.0", licence_status="unverified",
        citation="Tschandl P. et al. Sci. Data 5, 180161 (2018); Codella N. et al. Skin lesion analysis toward "
                 "melanoma detection (ISIC 2017). arXiv:1710.05006; Combalia M. et al. arXiv:1908.02288 (2019)",
        layout="ISIC_2019_Training_GroundTruth.csv (one-hot MEL..SCC,UNK); ISIC_2019_Training_Metadata.csv "
               "(last column `sex`, or `gender` in older copies); ISIC_2019_Training_Input/<image>.jpg",
        notes="Contains HAM10000 (HAM_*), BCN20000 (BCN_*) and MSK images; see build_manifest(dedupe=True). The "
              "images are also in the ISIC archive (`isic collection list`), but this loader reads the challenge CSVs.",
    ),
    "isic2020": SourceSpec(
        name="isic2020", title="SIIM-ISIC 2020 Challenge (training set)", modality="dermoscopic",
        homepage="https://challenge.isic-archive.com/data/#2020",
        download="download ISIC_2020_Training_JPEG.zip and ISIC_2020_Training_GroundTruth(_v2).csv (optionally "
                 "ISIC_2020_Training_Duplicates.csv) from the challenge page, or " + _ISIC_CLI
                 + "`isic image download --collections 70 <root>` and keep the challenge ground-truth CSV beside it",
        licence="CC BY-NC 4.0", licence_status="unverified",
        citation="Rotemberg V. et al. A patient-centric dataset of images and metadata for identifying melanomas "
                 "using clinical context. Sci. Data 8, 34 (2021). doi:10.34970/2020-ds01",
        layout="ISIC_2020_Training_GroundTruth_v2.csv (with lesion_id) or ISIC_2020_Training_GroundTruth.csv; "
               "train/<image_name>.jpg (searched recursively); optional ISIC_2020_Training_Duplicates.csv",
        notes="27,124 benign images have diagnosis 'unknown': they have no ISIC8 class and are excluded (counted).",
    ),
    "pad_ufes_20": SourceSpec(
        name="pad_ufes_20", title="PAD-UFES-20", modality="clinical",
        homepage="https://doi.org/10.17632/zr7vgbcyr2.1",
        download="Mendeley Data doi:10.17632/zr7vgbcyr2.1: download the archive and unzip it (metadata.csv, "
                 "images/imgs_part_1..3)",
        licence="CC BY 4.0", licence_status="repo",
        citation="Pacheco A. G. C. et al. PAD-UFES-20: a skin lesion dataset composed of patient data and clinical "
                 "images collected from smartphones. Mendeley Data V1 (2020), doi:10.17632/zr7vgbcyr2.1; "
                 "Data in Brief 32:106221 (2020) (unverified)",
        layout="metadata.csv (26 columns, `fitspatrick` spelled so); images/imgs_part_*/PAT_*.png (searched "
               "recursively: a flat images/ folder works too)",
    ),
    "derm7pt_derm": SourceSpec(
        name="derm7pt_derm", title="Derm7pt (7-point criteria), dermoscopic images", modality="dermoscopic",
        homepage="http://derm.cs.sfu.ca/",
        download="register and download release_v0 from http://derm.cs.sfu.ca/ and unzip it (folder release_v0)",
        licence="academic research use; images may not be redistributed; Dr. Giuseppe Argenziano retains all rights",
        licence_status="file",
        citation="Kawahara J., Daneshvar S., Argenziano G., Hamarneh G. Seven-point checklist and skin lesion "
                 "classification using multitask multimodal neural nets. IEEE J. Biomed. Health Inform. 23(2), "
                 "538-546 (2019). doi:10.1109/JBHI.2018.2824327",
        layout="meta/meta.csv (column `derm`), meta/{train,valid,test}_indexes.csv, images/<folder>/<file> "
               "(paths matched case-insensitively: meta.csv mixes NEL/Nel026.jpg, FCl/ vs FCL/)",
    ),
    "derm7pt_clinic": SourceSpec(
        name="derm7pt_clinic", title="Derm7pt (7-point criteria), clinical images", modality="clinical",
        homepage="http://derm.cs.sfu.ca/",
        download="same download as derm7pt_derm (release_v0)",
        licence="academic research use; images may not be redistributed; Dr. Giuseppe Argenziano retains all rights",
        licence_status="file",
        citation="Kawahara J. et al. IEEE J. Biomed. Health Inform. 23(2), 538-546 (2019). "
                 "doi:10.1109/JBHI.2018.2824327",
        layout="meta/meta.csv (column `clinic`), images/<folder>/<file>",
        notes="Cases whose clinical image is missing (meta.csv reuses the dermoscopic file) are skipped and counted.",
    ),
    "ph2": SourceSpec(
        name="ph2", title="PH2", modality="dermoscopic",
        homepage="https://www.fc.up.pt/addi/ph2%20database.html",
        download="request/download PH2Dataset from the ADDI project page and unpack it (folder PH2Dataset)",
        licence="free for research use with citation", licence_status="unverified",
        citation="Mendonça T., Ferreira P. M., Marques J. S., Marçal A. R. S., Rozeira J. PH2 - a dermoscopic image "
                 "database for research and benchmarking. EMBC 2013, 5437-5440. doi:10.1109/EMBC.2013.6610779",
        layout="PH2_dataset.xlsx (sheet Folha1, header on row 13, X marks); "
               "PH2 Dataset images/<IMDxxx>/<IMDxxx>_Dermoscopic_Image/<IMDxxx>.bmp",
    ),
    "skinl2": SourceSpec(
        name="skinl2", title="SKINL2 light-field skin lesion dataset (dermoscopic images)", modality="dermoscopic",
        homepage="https://www.it.pt/AutomaticPage?id=3459",
        download="download SKINL2_v1.zip / SKINL2_v2.zip (manual request on the Instituto de Telecomunicações page) "
                 "and unzip them side by side",
        licence="unknown (no licence text found)", licence_status="unverified",
        citation="Faria S. M. M. et al. Light field image dataset of skin lesions. EMBC 2019 (unverified details)",
        layout="v1: SKINL2_v1/Dermatoscopic/<Category>/<NNNN>_Dermatoscopic.png; "
               "v2/v3: SKINL2_v2/<NNNN>/<Category>/Dermatoscopic/<NNNN>_Dermatoscopic.png (.png or .jpg)",
        notes="No public label spreadsheet: the class is the <Category> folder name. Layout from public loaders, "
              "not checked against the archives.",
    ),
    "fitzpatrick17k": SourceSpec(
        name="fitzpatrick17k", title="Fitzpatrick17k", modality="clinical",
        homepage="https://github.com/mattgroh/fitzpatrick17k",
        download="clone github.com/mattgroh/fitzpatrick17k for fitzpatrick17k.csv and fetch the images from the "
                 "`url` column (or request the image archive from the authors) into one folder",
        licence="CC BY-NC-SA 3.0", licence_status="repo",
        citation="Groh M. et al. Evaluating deep neural networks trained on clinical images in dermatology with the "
                 "Fitzpatrick 17k dataset. CVPR Workshops (ISIC) 2021, 1820-1828",
        layout="fitzpatrick17k.csv (column fitzpatrick_scale, or fitzpatrick in the 2021 release); images anywhere "
               "below root named <md5hash>.jpg, <md5hash> (no extension) or <url_alphanum>",
        notes="Only neoplastic labels with an ISIC8 class are kept; inflammatory conditions are excluded and counted. "
              "Many source URLs are dead: load with strict=False to skip and count images you could not fetch.",
    ),
    "ddi": SourceSpec(
        name="ddi", title="DDI (Diverse Dermatology Images)", modality="clinical",
        homepage="https://ddi-dataset.github.io/",
        download="request access through the Stanford AIMI page linked from https://ddi-dataset.github.io/ and "
                 "unzip (ddi_metadata.csv beside the PNGs)",
        licence="Stanford AIMI research-use agreement", licence_status="unverified",
        citation="Daneshjou R. et al. Disparities in dermatology AI performance on a diverse, curated clinical image "
                 "set. Sci. Adv. 8(32), eabq6147 (2022)",
        layout="ddi_metadata.csv (unnamed index, DDI_ID, DDI_file, skin_tone 12/34/56, malignant, disease); "
               "<DDI_file> anywhere below root",
        notes="skin_tone is a Fitzpatrick pair (I-II, III-IV, V-VI), not one type: `fitzpatrick` stays NA and "
              "attributes.fitzpatrick_pair holds the pair.",
    ),
    "med_node": SourceSpec(
        name="med_node", title="MED-NODE", modality="clinical",
        homepage="https://www.cs.rug.nl/~imaging/databases/melanoma_naevi/",
        download="download complete_mednode_dataset.zip from the University of Groningen page and unzip it",
        licence="research use only (no licence text found)", licence_status="unverified",
        citation="Giotis I. et al. MED-NODE: a computer-assisted melanoma diagnosis system using non-dermoscopic "
                 "images. Expert Syst. Appl. 42(19), 6578-6585 (2015)",
        layout="complete_mednode_dataset/melanoma/*.jpg and complete_mednode_dataset/naevus/*.jpg "
               "(the class is the folder name; 70 + 100 images)",
    ),
}


def registry_table() -> pd.DataFrame:
    """The registry as a table (one row per source), e.g. to show in notebook 01."""
    return pd.DataFrame([asdict(spec) for spec in SOURCES.values()]).astype("string")
