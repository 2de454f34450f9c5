"""Dataset folders in each real dataset's own layout, from either of two metadata trees:

- the real metadata files in ../shared/datasets/metadata (copied at test time, never committed), or
- `write_fake_metadata(folder)`: an invented stand-in with the same tree, file names, columns, encodings, line
  endings and quirks (missing-value spellings, unknown labels, several images per lesion, mixed-case paths, ...),
  a few rows per source, every value made up here. `write_fake_samples(folder)` does the same for
  ../shared/datasets/real-samples (HAM10000 and PAD-UFES-20 with small generated images).

`build(name, metadata_tree, root)` lays a dataset out from either tree, with the same tiny placeholder image
hard-linked under every file name the metadata names. The expected values of every fake row are written out by hand
in tests/data/test_loaders_*.py."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def encoded(fmt: str, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), (150, 90, 70)).save(buf, fmt)
    return buf.getvalue()


JPEG, PNG, BMP = encoded("JPEG"), encoded("PNG"), encoded("BMP")


def write_files(paths: list[str], data: bytes) -> None:
    """Put the same small encoded image under every path: written once, then hard-linked (no data blocks per file,
    so tens of thousands of files are created and removed in about a second)."""
    for parent in sorted({os.path.dirname(p) for p in paths}):
        os.makedirs(parent, exist_ok=True)
    with open(paths[0], "wb") as fh:
        fh.write(data)
    for path in paths[1:]:
        os.link(paths[0], path)


def raw_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _copy(meta: Path, root: Path, *files: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for rel in files:
        shutil.copy(meta / rel, root)


def build(name: str, meta: Path, root: Path) -> Path:
    """`root` laid out as dataset `name` is downloaded (metadata from `meta`: ../shared/datasets/metadata or the
    invented stand-in of `write_fake_metadata`)."""
    if name == "ham10000":
        _copy(meta, root, "HAM10000/HAM10000_metadata.csv")
        ids = raw_csv(root / "HAM10000_metadata.csv")["image_id"]
        part = (ids.str[5:].astype(int) >= 29306).map({False: "HAM10000_images_part_1", True: "HAM10000_images_part_2"})
        write_files([str(root / p / f"{i}.jpg") for p, i in zip(part, ids)], JPEG)
    elif name == "bcn20000":
        _copy(meta, root, "BCN20000/bcn20000_metadata_2025-05-22.csv")
        write_files([str(root / f"{i}.jpg") for i in raw_csv(root / "bcn20000_metadata_2025-05-22.csv")["isic_id"]],
                    JPEG)
    elif name == "isic2019":
        _copy(meta, root, "ISIC2019/ISIC_2019_Training_GroundTruth.csv", "ISIC2019/ISIC_2019_Training_Metadata.csv")
        ids = raw_csv(root / "ISIC_2019_Training_GroundTruth.csv")["image"]
        write_files([str(root / "ISIC_2019_Training_Input" / f"{i}.jpg") for i in ids], JPEG)
    elif name == "pad_ufes_20":
        _copy(meta, root, "PAD-UFES-20/metadata.csv")
        names = raw_csv(root / "metadata.csv")["img_id"]
        write_files([str(root / "images" / f"imgs_part_{i % 3 + 1}" / n) for i, n in enumerate(names)], PNG)
    elif name in ("derm7pt_derm", "derm7pt_clinic"):
        shutil.copytree(meta / "Derm7pt" / "meta", root / "release_v0" / "meta", dirs_exist_ok=True)
        raw = raw_csv(root / "release_v0" / "meta" / "meta.csv")
        paths = pd.concat([raw["derm"], raw["clinic"]]).drop_duplicates()
        folders = paths.str.split("/").str[0]
        on_disk = folders.groupby(folders.str.lower()).agg(lambda f: f.value_counts().index[0])  # FCl/ is FCL/
        files = folders.str.lower().map(on_disk) + "/" + paths.str.split("/").str[1]
        write_files([str(root / "release_v0" / "images" / f) for f in files], JPEG)
    elif name == "fitzpatrick17k":
        _copy(meta, root, "Fitzpatrick17k/fitzpatrick17k.csv")
        hashes = raw_csv(root / "fitzpatrick17k.csv")["md5hash"]
        write_files([str(root / "data" / "finalfitz17k" / f"{h}.jpg") for h in hashes], JPEG)
    elif name == "ddi":
        _copy(meta, root, "DDI/ddi_metadata.csv")
        write_files([str(root / f) for f in raw_csv(root / "ddi_metadata.csv")["DDI_file"]], PNG)
    elif name == "isic2020":
        _copy(meta, root, "ISIC2020/ISIC_2020_Training_GroundTruth.csv", "ISIC2020/ISIC_2020_Training_Duplicates.csv")
        ids = raw_csv(root / "ISIC_2020_Training_GroundTruth.csv")["image_name"]
        write_files([str(root / "train" / f"{i}.jpg") for i in ids], JPEG)
    elif name == "ph2":
        base = root / "PH2Dataset"
        _copy(meta, base, "PH2/PH2_dataset.xlsx")
        sheet = pd.read_excel(base / "PH2_dataset.xlsx", header=None, dtype=str)
        names = sheet.iloc[13:, 0].dropna().str.strip()
        images = base / "PH2 Dataset images"
        write_files([str(images / n / f"{n}_Dermoscopic_Image" / f"{n}.bmp") for n in names], BMP)
        write_files([str(images / n / f"{n}_lesion" / f"{n}_lesion.bmp") for n in names], BMP)
    else:
        raise ValueError(f"no layout builder for {name!r}")
    return root


# ---------------------------------------------------------------- invented stand-ins for ../shared/datasets

def _write(path: Path, rows: list[str], *, eol: str = "\n", final: bool = True, encoding: str = "utf-8") -> None:
    """Write CSV lines with the line ending, final newline and encoding of the real file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((eol.join(rows) + (eol if final else "")).encode(encoding))


HAM_HEADER = "lesion_id,image_id,dx,dx_type,age,sex,localization"
HAM_ROWS = [  # two images of one lesion in consecutive rows; float ages, one empty; `unknown` sex and site
    "HAM_0900001,ISIC_0024401,nv,follow_up,45.0,female,back",
    "HAM_0900001,ISIC_0024402,nv,follow_up,45.0,female,back",
    "HAM_0900002,ISIC_0029400,mel,histo,70.0,male,face",
    "HAM_0900003,ISIC_0029401,akiec,histo,,unknown,unknown",
    "HAM_0900004,ISIC_0025500,bkl,consensus,5.0,male,scalp",
    "HAM_0900005,ISIC_0031000,bcc,histo,85.0,female,trunk",
    "HAM_0900006,ISIC_0026000,df,confocal,35.0,male,lower extremity",
    "HAM_0900007,ISIC_0033000,vasc,histo,0.0,female,acral",
]
HAM_DATASET = ["vidir_molemax", "vidir_molemax", "rosendahl", "vidir_modern", "vienna_dias", "rosendahl",
               "vidir_modern", "vidir_molemax"]  # the 8th column of the Dataverse variant

BCN_HEADER = ("isic_id,attribution,copyright_license,age_approx,anatom_site_general,anatom_site_special,"
              "benign_malignant,concomitant_biopsy,diagnosis_1,diagnosis_2,diagnosis_3,diagnosis_confirm_type,"
              "image_type,lesion_id,melanocytic,sex")
_CLINIC = "Hospital Clínic de Barcelona,CC-BY-NC"  # the multi-byte í of the real attribution
BCN_ROWS = [  # a quoted label with a comma, vascular lesions labelled at level 2 only, no diagnosis at all, a scar,
    # a label missing from label_map.csv, two images of one lesion, missing age and sex
    f"ISIC_0090001,{_CLINIC},60,anterior torso,,benign,True,Benign,Benign melanocytic proliferations,Nevus,"
    "histopathology,dermoscopic,IL_0900001,True,male",
    f"ISIC_0090002,{_CLINIC},55,posterior torso,,malignant,True,Malignant,"
    '"Malignant melanocytic proliferations (Melanoma)","Melanoma, NOS",histopathology,dermoscopic,IL_0900002,True,'
    "female",
    f"ISIC_0090003,{_CLINIC},50,lower extremity,,,True,,,,histopathology,dermoscopic,IL_0900003,,male",
    f"ISIC_0090004,{_CLINIC},30,anterior torso,,,True,Benign,Benign soft tissue proliferations - Vascular,,"
    "histopathology,dermoscopic,IL_0900004,False,male",
    f"ISIC_0090005,{_CLINIC},45,head/neck,,,True,Benign,Benign soft tissue proliferations - Fibro-histiocytic,Scar,"
    "histopathology,dermoscopic,IL_0900005,False,female",
    f"ISIC_0090006,{_CLINIC},,palms/soles,acral palms or soles,benign,False,Benign,Benign melanocytic proliferations,"
    "Nevus,confocal microscopy with consensus dermoscopy,dermoscopic,IL_0900001,True,",
    f"ISIC_0090007,{_CLINIC},75,head/neck,,malignant,True,Malignant,Malignant epidermal proliferations,"
    "Basal cell carcinoma,histopathology,dermoscopic,IL_0900007,False,male",
    f"ISIC_0090008,{_CLINIC},65,upper extremity,,,True,Indeterminate,Indeterminate melanocytic proliferations,"
    "Atypical melanocytic neoplasm,,dermoscopic,IL_0900008,True,female",
]

ISIC2019_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK"]
ISIC2019_ROWS = [  # (image, class, age_approx, anatom_site_general, lesion_id, sex); the first three are the fake
    # HAM10000 / BCN20000 images again (ISIC 2019 contains both); one `_downsampled` name; one UNK row
    ("ISIC_0024401", "NV", "45", "posterior torso", "HAM_0900001", "female"),
    ("ISIC_0029400", "MEL", "70", "head/neck", "HAM_0900002", "male"),
    ("ISIC_0090001", "NV", "60", "anterior torso", "BCN_0900001", "male"),
    ("ISIC_0000901", "BCC", "55", "anterior torso", "", "female"),
    ("ISIC_0000902_downsampled", "AK", "", "", "", ""),
    ("ISIC_0000903", "SCC", "80", "head/neck", "MSK4_0900003", "male"),
    ("ISIC_0000904", "DF", "35", "lower extremity", "MSK4_0900004", "female"),
    ("ISIC_0000905", "VASC", "20", "oral/genital", "", "male"),
    ("ISIC_0000906", "BKL", "65", "lateral torso", "BCN_0900002", "female"),
    ("ISIC_0000907", "UNK", "40", "palms/soles", "", "female"),
]

ISIC2020_ROWS = [  # (image_name, patient_id, lesion_id, sex, age, site, diagnosis, benign_malignant, target)
    ("ISIC_0900001", "IP_0900001", "IL_0910001", "male", "45", "head/neck", "unknown", "benign", "0"),
    ("ISIC_0900002", "IP_0900001", "IL_0910002", "male", "45", "torso", "nevus", "benign", "0"),
    ("ISIC_0900003", "IP_0900002", "IL_0910003", "female", "60", "lower extremity", "melanoma", "malignant", "1"),
    ("ISIC_0900004", "IP_0900003", "IL_0910004", "", "", "", "unknown", "benign", "0"),
    ("ISIC_0900005", "IP_0900004", "IL_0910005", "female", "70", "upper extremity", "seborrheic keratosis", "benign",
     "0"),
    ("ISIC_0900006", "IP_0900004", "IL_0910006", "female", "70", "palms/soles", "cafe-au-lait macule", "benign", "0"),
    ("ISIC_0900007", "IP_0900005", "IL_0910007", "male", "30", "oral/genital", "lentigo NOS", "benign", "0"),
    ("ISIC_0900008", "IP_0900005", "IL_0910002", "male", "30", "torso", "nevus", "benign", "0"),
]
ISIC2020_DUPLICATES = [("ISIC_0900008", "ISIC_0900002"), ("ISIC_0900004", "ISIC_0900001")]

PAD_HEADER = ("patient_id,lesion_id,smoke,drink,background_father,background_mother,age,pesticide,gender,"
              "skin_cancer_history,cancer_history,has_piped_water,has_sewage_system,fitspatrick,region,diameter_1,"
              "diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed")
PAD_ROWS = [  # the Excel re-save of ../shared (TRUE/FALSE, integer fitspatrick and diameters, CRLF): one patient with
    # two lesions, non-biopsied rows with the 13 history columns empty, UNK symptoms, BRASIL, a 1.2 mm diameter, BOW
    "PAT_9001,9101,FALSE,TRUE,POMERANIA,ITALY,61,FALSE,MALE,TRUE,FALSE,TRUE,TRUE,2,FACE,8,6,BCC,"
    "TRUE,TRUE,FALSE,TRUE,FALSE,TRUE,PAT_9001_9101_101.png,TRUE",
    "PAT_9001,9102,FALSE,TRUE,POMERANIA,ITALY,61,FALSE,MALE,TRUE,FALSE,TRUE,TRUE,2,NOSE,4,1.2,SCC,"
    "UNK,TRUE,TRUE,UNK,TRUE,TRUE,PAT_9001_9102_102.png,TRUE",
    "PAT_9002,9103,,,,,17,,,,,,,,ARM,,,NEV,FALSE,FALSE,FALSE,FALSE,FALSE,FALSE,PAT_9002_9103_103.png,FALSE",
    "PAT_9003,9104,TRUE,FALSE,BRASIL,BRAZIL,78,TRUE,FEMALE,FALSE,TRUE,FALSE,FALSE,1,BACK,10,9,MEL,"
    "TRUE,TRUE,TRUE,TRUE,TRUE,TRUE,PAT_9003_9104_104.png,TRUE",
    "PAT_9004,9105,FALSE,FALSE,GERMANY,GERMANY,66,TRUE,FEMALE,TRUE,TRUE,TRUE,FALSE,3,FOREARM,5,4,ACK,"
    "TRUE,FALSE,FALSE,FALSE,FALSE,FALSE,PAT_9004_9105_105.png,FALSE",
    "PAT_9005,9106,,,,,80,,,,,,,,CHEST,,,SEK,FALSE,UNK,FALSE,FALSE,FALSE,TRUE,PAT_9005_9106_106.png,FALSE",
    "PAT_9006,9107,FALSE,FALSE,NETHERLANDS,POMERANIA,45,FALSE,MALE,FALSE,FALSE,TRUE,TRUE,4,THIGH,15,12,BOW,"
    "FALSE,TRUE,FALSE,TRUE,FALSE,TRUE,PAT_9006_9107_107.png,TRUE",
]
PAD_SAMPLE_ROWS = [  # the original Mendeley style (True/False, 2.0), LF: the layout of ../shared/datasets/real-samples
    "PAT_9101,9201,False,False,GERMANY,GERMANY,70,False,MALE,False,False,True,False,2.0,NOSE,5.0,3.0,BCC,"
    "True,True,False,False,True,True,PAT_9101_9201_201.png,True",
    "PAT_9102,9202,,,,,52,,,,,,,,FACE,,,NEV,False,False,False,False,False,True,PAT_9102_9202_202.png,False",
    "PAT_9103,9203,False,True,ITALY,ITALY,68,True,FEMALE,True,True,True,True,3.0,HAND,7.0,6.0,ACK,"
    "True,False,False,False,False,True,PAT_9103_9203_203.png,True",
    "PAT_9104,9204,True,False,POMERANIA,POMERANIA,59,False,FEMALE,False,True,True,True,1.0,BACK,12.0,10.0,MEL,"
    "True,True,True,True,False,True,PAT_9104_9204_204.png,True",
    "PAT_9105,9205,,,,,74,,,,,,,,NECK,,,SEK,False,False,False,False,False,False,PAT_9105_9205_205.png,False",
]

DERM7PT_HEADER = ("case_num,diagnosis,seven_point_score,pigment_network,streaks,pigmentation,regression_structures,"
                  "dots_and_globules,blue_whitish_veil,vascular_structures,level_of_diagnostic_difficulty,elevation,"
                  "location,sex,management,clinic,derm,case_id,notes")
DERM7PT_ROWS = [  # mixed-case paths (NEL901.JPG, Nel902.jpg), one FCl/ among FCL/, a lower-case folder, a case whose
    # clinical photo is missing (meta.csv reuses the dermoscopic file and says so in `notes`), an excluded label
    "1,basal cell carcinoma,1,absent,absent,absent,absent,absent,absent,arborizing,medium,nodular,back,male,excision,"
    "NEL/NEL901.JPG,NEL/Nel902.jpg,,",
    "2,clark nevus,2,typical,absent,diffuse irregular,absent,regular,absent,absent,low,flat,upper limbs,female,"
    "clinical follow up,NDL/Ndl901.jpg,NDL/Ndl902.jpg,9a8b7c6d,",
    "3,melanoma (in situ),4,atypical,irregular,localized irregular,blue areas,irregular,present,absent,high,palpable,"
    "head neck,female,excision,FCL/Fcl901.jpg,FCl/Fcl902.jpg,,",
    "4,lentigo,2,atypical,absent,absent,absent,absent,absent,absent,high,flat,acral,male,excision,Fhl/Fhl902.jpg,"
    "Fhl/Fhl902.jpg,,Replaced clinic Fhl/Fhl901.jpg with derm Fhl/Fhl902.jpg",
    "5,melanosis,0,absent,absent,absent,absent,absent,absent,absent,low,flat,genital areas,female,"
    "no further examination,Ggl/Ggl901.jpg,Ggl/Ggl902.jpg,,",
    "6,seborrheic keratosis,1,absent,absent,absent,absent,regular,absent,dotted,medium,palpable,lower limbs,male,"
    "excision,FCL/Fcl903.jpg,FCL/Fcl904.jpg,,",
]
DERM7PT_INDEXES = {"train": [0, 1, 5], "valid": [3], "test": [2, 4]}  # 0-based positions into meta.csv

FITZ_HEADER = ("md5hash,fitzpatrick_scale,fitzpatrick_centaur,label,nine_partition_label,three_partition_label,qc,url,"
               "url_alphanum")
FITZ_ROWS = [  # (md5hash, scale, centaur, label, nine, three, qc, url): type -1 is unknown, qc mostly empty, one url empty
    ("0f17a000000000000000000000000001", "3", "3", "melanoma", "malignant melanoma", "malignant", ""),
    ("0f17a000000000000000000000000002", "-1", "2", "basal cell carcinoma", "malignant epidermal", "malignant",
     "1 Diagnostic"),
    ("0f17a000000000000000000000000003", "5", "-1", "psoriasis", "inflammatory", "non-neoplastic", ""),
    ("0f17a000000000000000000000000004", "2", "2", "seborrheic keratosis", "benign epidermal", "benign",
     "3 Wrongly labelled"),
    ("0f17a000000000000000000000000005", "6", "5", "pyogenic granuloma", "benign dermal", "benign", ""),
    ("0f17a000000000000000000000000006", "1", "1", "halo nevus", "benign melanocyte", "benign", ""),
]


def _fitz_url(i: int, label: str) -> tuple[str, str]:
    if i == 3:
        return "", ""  # the rows without a source URL
    url = f"https://atlas.example.org/img/{label.replace(' ', '-')}-{i + 1}.jpg"
    return url, "".join(ch for ch in url if ch.isalnum()) + ".jpg"


DDI_HEADER = ",DDI_ID,DDI_file,skin_tone,malignant,disease"  # an empty-named index column first
DDI_ROWS = [
    "0,1,000901.png,12,True,melanoma-in-situ",
    "1,2,000902.png,34,False,seborrheic-keratosis-irritated",
    "2,3,000903.png,56,True,basal-cell-carcinoma-nodular",
    "3,4,000904.png,56,False,verruca-vulgaris",
    "4,5,000905.png,12,True,squamous-cell-carcinoma-in-situ",
    "5,6,000906.png,34,False,melanocytic-nevi",
]

PH2_HEADER = ["Image Name", "Histological Diagnosis", "Common Nevus", "Atypical Nevus", "Melanoma",
              "Asymmetry\n(0/1/2)", "Pigment Network\n(AT/T)", "Dots/Globules\n(A/AT/T)", "Streaks\n(A/P)",
              "Regression Areas\n(A/P)", "Blue-Whitish Veil\n(A/P)", "White", "Red", "Light-Brown", "Dark-Brown",
              "Blue-Gray", "Black"]
PH2_ROWS = [  # ordered by class, as the real workbook; one name with a trailing space, one mark written " x"
    ["IMD901", None, "X", None, None, 0, "T", "A", "A", "A", "A", None, None, "X", None, None, None],
    ["IMD905", None, "X", None, None, 1, "AT", "T", "A", "A", "A", None, None, "X", "X", None, None],
    ["IMD902", None, None, "X", None, 1, "AT", "AT", "P", "A", "A", None, None, "X", "X", None, None],
    ["IMD903", "Dysplastic nevus", None, "X", None, 2, "T", "A", "A", "P", "A", None, None, None, "X", "X", None],
    ["IMD904", "Melanoma in situ", None, None, "X", 2, "AT", "AT", "P", "P", "P", "X", "X", None, "X", "X", "X"],
    ["IMD906 ", None, None, None, " x", 2, "AT", "T", "P", "A", "P", None, None, None, "X", None, "X"],
]


def write_ph2_workbook(path: Path, rows: list[list[object]]) -> None:
    """PH2_dataset.xlsx as distributed: sheet Folha1, a legend in rows 2-9, the super-header of row 12 (merged cells),
    the header in row 13 (with newlines), data from row 14."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.title = "Folha1"
    sheet["F2"] = "Legends"
    sheet.merge_cells("F2:K2")
    for row, (code, text) in enumerate([(0, "Fully Simmetric"), (1, "Symmetric in 1 axes"), (2, "Fully Asymmetric"),
                                        ("AT", "Atypical"), ("T", "Typical"), ("A", "Absent"), ("P", "Present")],
                                       start=3):
        sheet.cell(row, 7, code)
        sheet.cell(row, 8, text)
    sheet["F3"], sheet["F6"] = "Asymmetry", "Pigment Network\nDots/Globules\nStreaks"
    sheet["C12"], sheet["L12"] = "Clinical Diagnosis", "Colors"
    sheet.merge_cells("C12:E12")
    sheet.merge_cells("L12:Q12")
    for col, name in enumerate(PH2_HEADER, start=1):
        sheet.cell(13, col, name)
    for r, values in enumerate(rows, start=14):
        for col, value in enumerate(values, start=1):
            if value is not None:
                sheet.cell(r, col, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    book.save(path)


def write_fake_metadata(meta: Path) -> Path:
    """An invented ../shared/datasets/metadata: the files the loaders read, in the same tree, with the same names,
    columns, encodings and line endings (see SOURCES.md there), a few made-up rows each."""
    _write(meta / "HAM10000" / "HAM10000_metadata.csv", [HAM_HEADER, *HAM_ROWS])
    _write(meta / "HAM10000" / "dataverse_variant" / "HAM10000_metadata",
           [HAM_HEADER + ",dataset", *[f"{r},{d}" for r, d in zip(HAM_ROWS, HAM_DATASET)]])
    _write(meta / "BCN20000" / "bcn20000_metadata_2025-05-22.csv", [BCN_HEADER, *BCN_ROWS], eol="\r\n")
    gt = [",".join([img] + ["1.0" if c == cls else "0.0" for c in ISIC2019_CLASSES])
          for img, cls, *_ in ISIC2019_ROWS]
    _write(meta / "ISIC2019" / "ISIC_2019_Training_GroundTruth.csv", ["image," + ",".join(ISIC2019_CLASSES), *gt],
           eol="\r\n")
    rows = [f"{img},{age},{site},{lesion},{sex}" for img, _, age, site, lesion, sex in ISIC2019_ROWS]
    rows[3], rows[4] = rows[4], rows[3]  # the metadata is joined on `image`, not on row order
    _write(meta / "ISIC2019" / "ISIC_2019_Training_Metadata.csv",
           ["image,age_approx,anatom_site_general,lesion_id,sex", *rows], eol="\r\n")
    v1 = [f"{i},{p},{s},{a + '.0' if a else ''},{site},{d},{bm},{t}" for i, p, _, s, a, site, d, bm, t in ISIC2020_ROWS]
    _write(meta / "ISIC2020" / "ISIC_2020_Training_GroundTruth.csv",
           ["image_name,patient_id,sex,age_approx,anatom_site_general_challenge,diagnosis,benign_malignant,target",
            *v1])
    _write(meta / "ISIC2020" / "ISIC_2020_Training_GroundTruth_v2.csv",
           ["image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
            "benign_malignant,target", *[",".join(r) for r in ISIC2020_ROWS]], eol="\r\n", final=False)
    _write(meta / "ISIC2020" / "ISIC_2020_Training_Duplicates.csv",
           ["image_name_1,image_name_2", *[f"{a},{b}" for a, b in ISIC2020_DUPLICATES]], eol="\r\n")
    _write(meta / "PAD-UFES-20" / "metadata.csv", [PAD_HEADER, *PAD_ROWS], eol="\r\n")
    _write(meta / "Derm7pt" / "meta" / "meta.csv", [DERM7PT_HEADER, *DERM7PT_ROWS])
    for split, positions in DERM7PT_INDEXES.items():
        _write(meta / "Derm7pt" / "meta" / f"{split}_indexes.csv", ["indexes", *map(str, positions)])
    _write(meta / "Derm7pt" / "README.txt", ["Invented stand-in for the Derm7pt release_v0 README."])
    fitz, old = [FITZ_HEADER], [",md5hash,fitzpatrick,label,nine_partition_label,three_partition_label,qc,url,"
                                "url_alphanum"]
    for i, (md5, scale, centaur, label, nine, three, qc) in enumerate(FITZ_ROWS):
        url, alnum = _fitz_url(i, label)
        fitz.append(f"{md5},{scale},{centaur},{label},{nine},{three},{qc},{url},{alnum}")
        old.append(f"{i % 4},{md5},{scale},{label},{nine},{three},{qc},{url},{alnum}")  # index from concatenated frames
    _write(meta / "Fitzpatrick17k" / "fitzpatrick17k.csv", fitz)
    _write(meta / "Fitzpatrick17k" / "v2021_initial" / "fitzpatrick17k.csv", old)
    _write(meta / "DDI" / "ddi_metadata.csv", [DDI_HEADER, *DDI_ROWS])
    write_ph2_workbook(meta / "PH2" / "PH2_dataset.xlsx", PH2_ROWS)
    _write(meta / "PH2" / "Readme.txt", ["Invented stand-in for the PH² readme (ISO-8859-1, CRLF)."], eol="\r\n",
           encoding="latin-1")
    return meta


def noise_image(seed: int, size: tuple[int, int], fmt: str) -> bytes:
    """A small decodable image of random colours (distinct per seed), encoded as `fmt`."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


SAMPLE_SIZES = {"HAM10000": (60, 45), "PAD-UFES-20": (48, 40)}  # (width, height), the real ones' aspect ratios


def write_fake_samples(samples: Path) -> Path:
    """An invented ../shared/datasets/real-samples: HAM10000/ (metadata + HAM10000_images_part_{1,2}/*.jpg) and
    PAD-UFES-20/ (metadata.csv + images/*.png, flat), with a distinct small random image per row."""
    ham = samples / "HAM10000"
    _write(ham / "HAM10000_metadata.csv", [HAM_HEADER, *HAM_ROWS])
    for seed, row in enumerate(HAM_ROWS):
        image_id = row.split(",")[1]
        part = 2 if int(image_id[5:]) >= 29306 else 1
        path = ham / f"HAM10000_images_part_{part}" / f"{image_id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(noise_image(seed, SAMPLE_SIZES["HAM10000"], "JPEG"))
    pad = samples / "PAD-UFES-20"
    _write(pad / "metadata.csv", [PAD_HEADER, *PAD_SAMPLE_ROWS])
    (pad / "images").mkdir(parents=True, exist_ok=True)
    for seed, row in enumerate(PAD_SAMPLE_ROWS):
        (pad / "images" / row.split(",")[-2]).write_bytes(noise_image(100 + seed, SAMPLE_SIZES["PAD-UFES-20"], "PNG"))
    return samples
