# Copyright 2026 clipgs maintainers
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

"""Query answers as RViz markers and, where vision_msgs is installed, as a Detection3DArray."""

from geometry_msgs.msg import Point
import numpy as np
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

try:  # vision_msgs is not on PyPI: the node says so at start-up and publishes markers only
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose
except ImportError:
    Detection3D = Detection3DArray = ObjectHypothesisWithPose = None


def point(xyz):
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def instance_points(instances):
    """Return the objects' centroids, box minima and box maxima as three lists of points."""
    return tuple([point(getattr(i, name)) for i in instances]
                 for name in ('centroid', 'box_min', 'box_max'))


def box_markers(label, result, frame_id, stamp, limit=20):
    """One translucent box and a text label per matching object; older markers are cleared."""
    markers = [Marker(header=Header(stamp=stamp, frame_id=frame_id), action=Marker.DELETEALL)]
    for k, inst in enumerate(result.instances[:limit]):
        header = Header(stamp=stamp, frame_id=frame_id)
        centre = (inst.box_min + inst.box_max) / 2.0
        size = np.maximum(inst.box_max - inst.box_min, 0.01)
        box = Marker(header=header, ns='clipgs_query', id=2 * k, type=Marker.CUBE,
                     action=Marker.ADD)
        box.pose.position = point(centre)
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = (float(v) for v in size)
        box.color.r, box.color.g = 1.0, 0.3 if k == 0 else 0.7
        box.color.b, box.color.a = 0.1, 0.4
        text = Marker(header=header, ns='clipgs_query', id=2 * k + 1,
                      type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
        text.pose.position = point((centre[0], centre[1], inst.box_max[2] + 0.1))
        text.pose.orientation.w = 1.0
        text.scale.z = 0.15
        text.color.r = text.color.g = text.color.b = text.color.a = 1.0
        text.text = f'{label} #{k + 1} ({inst.score:.2f})'
        markers += [box, text]
    return MarkerArray(markers=markers)


def detections(label, result, frame_id, stamp):
    """vision_msgs/Detection3DArray: one detection per object (box centre, size, label, score)."""
    header = Header(stamp=stamp, frame_id=frame_id)
    out = Detection3DArray(header=header)
    for inst in result.instances:
        det = Detection3D(header=header)
        det.bbox.center.position = point((inst.box_min + inst.box_max) / 2.0)
        det.bbox.center.orientation.w = 1.0
        size = np.maximum(inst.box_max - inst.box_min, 0.01)
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = (float(v) for v in size)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = label
        hypothesis.hypothesis.score = float(inst.score)
        hypothesis.pose.pose.position = point(inst.centroid)
        hypothesis.pose.pose.orientation.w = 1.0
        det.results = [hypothesis]
        out.detections.append(det)
    return out
