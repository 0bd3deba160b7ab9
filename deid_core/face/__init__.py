"""Faces in images (paper §3, test-time steps a–d and f–h): image I/O, the averaged-face
template, detection + 68 landmarks, and :class:`FaceAligner` (warp, unwarp, blend, merge).

Modules: :mod:`~deid_core.face.image_io` → :mod:`~deid_core.face.template` →
:mod:`~deid_core.face.detect` → :mod:`~deid_core.face.aligner`; :mod:`~deid_core.face.rotated`
(faces turned by 90°: detection on turned copies of the frame).
"""
from deid_core.face.image_io import (  # noqa: F401
    IMAGE_SUFFIXES, read_image, to_rgb_uint8, write_image)
from deid_core.face.template import (  # noqa: F401
    apply_affine, DEFAULT_MARGIN, five_points, grow_box, shape_error, square_box, TEMPLATE_FILE,
    template_landmarks, umeyama)
from deid_core.face.detect import (  # noqa: F401
    AlignConfig, box_iou, DEFAULT_DETECTOR, DETECTORS, Face, landmark_check, obscure, YUNET_BOX_SHIFT_Y,
    YUNET_BOX_SIDE, YUNET_FILE, yunet_model_path, YUNET_SCORE, yunet_to_dlib_box, YuNetDetector)
from deid_core.face.aligner import (  # noqa: F401
    align_face, align_file, FaceAligner, CropFn, passthrough_crops, warp_frame)
from deid_core.face.rotated import (  # noqa: F401
    detect_views, merge_faces, rotate_frame, RotationPolicy, same_face, unrotate_box,
    unrotate_face, unrotate_points)
