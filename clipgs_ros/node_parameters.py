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

"""The node's ROS parameters: every clipgs setting, declared with its help; wrong ones refused."""

from clipgs.errors import SettingsError
from clipgs.parameters import Parameters, parameter_specs
from rcl_interfaces.msg import ParameterDescriptor

LIVE = ('render_rate_hz', 'cloud_rate_hz', 'stats_period_s')  # what a running node applies
BUILT_IN = {'use_sim_time', 'start_type_description_service'}  # rclpy's own


def declare_settings(node):
    """
    Declare every setting on ``node``; returns the validated Parameters.

    The node is created with automatically_declare_parameters_from_overrides, so a parameter from
    the params file or the command line that is not a clipgs setting is seen: it raises
    SettingsError, as does a value of the wrong type or range, naming the parameter.
    """
    specs = {spec.name: spec for spec in parameter_specs()}
    unknown = sorted(set(node.get_parameters_by_prefix('')) - set(specs) - BUILT_IN)
    if unknown:
        raise SettingsError(f'unknown parameter(s) {unknown}; `clipgs params` lists them all')
    values = {}
    for spec in parameter_specs():
        known = node.has_parameter(spec.name)
        given = node.get_parameter(spec.name).value if known else spec.default
        if known:
            node.undeclare_parameter(spec.name)  # declared again below, with its description
        node.declare_parameter(spec.name, given, ParameterDescriptor(
            description=spec.help, additional_constraints=spec.constraints,
            dynamic_typing=True))
        values[spec.name] = node.get_parameter(spec.name).value
    return Parameters.from_flat(values)


def live_settings(settings, changes):
    """
    Return the node settings after a runtime parameter set, or None and why it is refused.

    Only LIVE parameters change at runtime; a wrong value is refused with what it accepts.
    """
    fixed = [p.name for p in changes if p.name not in LIVE]
    if fixed:
        return None, (f'{", ".join(fixed)} is read at start-up only: restart the node to change '
                      f'it (live: {", ".join(LIVE)})')
    try:
        return settings.replace(**{p.name: p.value for p in changes}), ''
    except (SettingsError, TypeError) as exc:
        return None, str(exc)
