"""SemanticTrainingConfig: how the semantic trainer trains the map's attributes (SAC, 3DCS, the 3D term).

Semantics are on when a 2D source is configured (``semantic_source`` / ``clipgs map --semantics``);
``sem_dim`` is then the attribute width per Gaussian, whatever the entry point.
"""
from __future__ import annotations

from dataclasses import dataclass

from clipgs.settings import Settings, at_least, greater_than, in_range, setting

UNIT = in_range(0.0, 1.0)


@dataclass
class SemanticTrainingConfig(Settings):
    # SAC: a low-dimensional attribute per Gaussian, decoded to the teacher's embedding space.
    sem_dim: int = setting(16, "semantic attribute channels per Gaussian (used when a semantic source is set)",
                           at_least(1))
    lr_semantics: float = setting(5e-3, "Adam learning rate, semantic attributes", greater_than(0.0))
    w_sem: float = setting(0.5, "weight of the cosine loss between decoded attributes and the mask embedding",
                           at_least(0.0))
    w_sem_contrast: float = setting(0.1, "weight of the contrastive loss over the frame's mask embeddings",
                                    at_least(0.0))
    w_sem_var: float = setting(0.1, "weight of the one-object-one-semantic loss (spread inside a mask)",
                               at_least(0.0))
    sem_tau: float = setting(0.1, "temperature of the contrastive loss", greater_than(0.0))
    sem_pixels: int = setting(2048, "mask pixels sampled per step for the semantic losses (with sem_mask_balance "
                                    "a small mask gets about as many as 4096 drawn evenly would give it)", at_least(1))
    sem_mask_balance: float = setting(0.25, "how evenly the sampled pixels spread over a frame's masks: a pixel is "
                                            "drawn with probability ~ 1 / (its mask's pixels)^this (0: every mask "
                                            "pixel alike, so walls take most samples; 1: every mask alike)", UNIT)
    sem_moves_geometry: bool = setting(False, "whether the semantic losses' gradients reach the Gaussians' shape "
                                              "(means, rotations, scales, opacities); false: they train the semantic "
                                              "attributes only, and colour and depth alone shape the map")
    async_source: bool = setting(False, "offline runs: the 2D source (CLIP, SAM) on its own thread, newest keyframe "
                                        "first, so mapping never waits (the live node always does this)")
    sem_hidden: int = setting(128, "semantic decoder MLP width; 0: no decoder, attributes are full embeddings "
                                   "(sem_dim = D)", at_least(0))
    lr_decoder: float = setting(1e-3, "Adam learning rate of the semantic decoder", greater_than(0.0))
    # Replay: the decoder (shared by all Gaussians, trained on what is in view) keeps the rooms the walk has left.
    sem_replay_pixels: int = setting(128, "decoder replay: rendered attribute rows each keyframe keeps from its last "
                                          "step, with their mask ids (0: no replay)", at_least(0))
    sem_replay_keyframes: int = setting(4, "decoder replay: other keyframes whose kept rows join each semantic step "
                                           "(the decoder is trained on them; their attributes are not)", at_least(0))
    w_sem_replay: float = setting(1.0, "decoder replay: weight of the SAC losses on the replayed rows",
                                  at_least(0.0))
    # Refit: when mapping ends, the decoder fitted alone on every held keyframe rendered from the finished map.
    refit_steps: int = setting(300, "decoder refit when mapping ends (clipgs map, the node's shutdown): steps "
                                    "fitting the shared decoder alone to every held keyframe's masks, rendered "
                                    "from the finished map; it decodes best what the walk saw last otherwise "
                                    "(0: off)", at_least(0))
    refit_pixels: int = setting(1024, "decoder refit: mask pixels rendered per keyframe (a step takes sem_pixels "
                                      "of them, from several keyframes)", at_least(1))
    refit_label_weight: float = setting(0.1, "decoder refit: weight of the cross-entropy to the keyframes' 3DCS "
                                             "pseudo-labels (w_dcs x dcs_decoder_share: the decoder's share "
                                             "while mapping)", at_least(0.0))
    # Paper-v2 3D term: decoded features of neighbouring Gaussians (k nearest within a radius) pulled together.
    w_sem_knn: float = setting(0.0, "weight of the 3D term pulling neighbouring Gaussians' semantics together "
                                    "(0: off)", at_least(0.0))
    sem_knn_k: int = setting(8, "3D term: neighbours per sampled Gaussian", at_least(1))
    sem_knn_anchors: int = setting(2048, "3D term: Gaussians sampled per keyframe", at_least(1))
    sem_knn_radius_m: float = setting(0.03, "3D term: only neighbours closer than this (m)", greater_than(0.0))
    # 3D label fusion: per-Gaussian class votes of the teacher's masks over every keyframe; needs a vocabulary.
    w_fused: float = setting(0.0, "3D label fusion: weight of the cross-entropy pulling a keyframe's decoded pixels "
                                  "to the classes its Gaussians got from the teacher's masks over all keyframes "
                                  "(0: off; 0.5 where the teacher's errors differ between views)", at_least(0.0))
    fused_tau: float = setting(0.1, "3D label fusion: temperature of the softmax that turns a mask's cosines to the "
                                    "vocabulary into its votes (small: one hard vote per mask; larger keeps the "
                                    "runner-up, which a teacher that leans to a wrong class still carries)",
                               greater_than(0.0))
    fused_revote: int = setting(1, "3D label fusion: older keyframes voting again per keyframe, in turn (Gaussians "
                                   "grown after a keyframe voted get its votes too)", at_least(0))
    # 3DCS (3D coherent self-training): needs a vocabulary.
    dcs_start: int = setting(20, "3DCS: keyframes mapped before the first relabelling round (warm-up)",
                             at_least(1))
    dcs_every: int = setting(10, "3D coherent self-training: relabel keyframes every this many keyframes "
                                 "(0: off)", at_least(0))
    dcs_confidence: float = setting(0.5, "3DCS: min softmax confidence of a pixel to vote and to keep a "
                                         "pseudo-label", UNIT)
    dcs_tau: float = setting(0.01, "3DCS: temperature of the labelling softmax that confidences are measured "
                                   "with", greater_than(0.0))
    w_dcs: float = setting(0.5, "3DCS: weight of the cross-entropy on pseudo-labels", at_least(0.0))
    dcs_novel_views: int = setting(1, "3DCS: views rendered between consecutive keyframes per round and "
                                      "labelled (0: off)", at_least(0))
    dcs_max_keyframes: int = setting(24, "3DCS: keyframes relabelled per round (the newest half, the rest in turn "
                                         "from older ones): bounds a round's time on long runs", at_least(1))
    dcs_min_age: int = setting(0, "3DCS: relabel a keyframe only once this many newer ones are mapped (objects it "
                                  "saw first are then trained under the teacher before the map labels them)",
                               at_least(0))
    dcs_mature_keyframes: int = setting(0, "3DCS: label only pixels that Gaussians at least this many keyframes old "
                                           "render (most of the weight): younger ones still learn the teacher's "
                                           "classes, and voting them in would keep what they hold now; 0: off",
                                        at_least(0))
    dcs_teacher_support: float = setting(0.1, "3DCS: keep a pseudo-label only where the teacher's masks, over every "
                                              "keyframe that saw the surface, gave its class at least this share of "
                                              "their votes (each Gaussian counts them, as 3D label fusion does): the "
                                              "map may settle what the teacher is unsure of, not turn a refrigerator "
                                              "the teacher calls one into the wall beside it (apartment +5 mIoU); 0: "
                                              "off", UNIT)
    dcs_decoder_share: float = setting(0.2, "3DCS: share of the gradient of the cross-entropy on pseudo-labels (and "
                                            "fused labels) that reaches the shared decoder; the attributes get all "
                                            "of it (0: attributes only, so on a walk through rooms the classes out "
                                            "of view are not pushed down)", UNIT)
    dcs_spread: bool = setting(False, "3DCS: spread each round's relabelling over the dcs_every keyframes after "
                                      "it (the same work, no multi-second stall on a live stream; the last "
                                      "round's labels serve meanwhile)")
    dcs_novel_steps: int = setting(2, "3DCS: semantic-only training steps on those novel views per keyframe",
                                   at_least(0))
    dcs_final_keyframes: int = setting(150, "3DCS when mapping ends (clipgs map, the node's shutdown; not while the "
                                            "stream is only quiet): up to this many held keyframes, spread over the "
                                            "walk, each relabelled from the map and trained one semantic step, "
                                            "dcs_final_sweeps times, before the decoder refit (a live stream on two "
                                            "CPU cores runs no round while it maps, dcs_yield; ~0.12 s a keyframe "
                                            "and sweep at 160x120; the node stops it at finish_budget_s); 0: off",
                                     at_least(0))
    dcs_final_sweeps: int = setting(2, "sweeps of the final 3DCS round over its keyframes (each sweep relabels "
                                       "from the map the last one left: a label one view fixes reaches the next)",
                                    at_least(1))
    dcs_segment_width: int = setting(160, "3DCS: renders wider than this are segmented on a block-averaged copy "
                                          "this wide (segmentation is most of a 3DCS round's time)", at_least(16))
    dcs_yield: bool = setting(True, "3DCS: on a live stream the mapper cannot keep up with (frames waiting), due "
                                    "relabelling rounds and novel-view steps wait until it can: two CPU cores at "
                                    "10 Hz then map a fifth to a half more keyframes of a walk through rooms; offline "
                                    "runs never wait")
    dcs_split_masks: bool = setting(True, "3DCS: vote inside each 2D mask's parts cut by segments of the keyframe's "
                                           "render (a small object a mask merged into its support keeps its own "
                                           "vote); false: inside whole masks")
