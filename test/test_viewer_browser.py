"""The live view in a real browser: reconstruction_node (random-weight TEST DOUBLE: its meshes are the objects'
padded boxes, coloured by object id) fed a generated scene, viewer_node, and headless Chromium (SwiftShader
WebGL) on the page. A screenshot before any object arrived has no pixels of the objects' colours; after the
objects arrive it has many. Skipped where Chromium is not installed (`make browser` installs it)."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
from ros_helpers import node_process, random_domain_id, render_scene, start_program, stop_program, wait_until

from occnet_ros.viewer.screenshot import HeadlessChromium, find_browser, screenshot_until

pytest.importorskip("rclpy")
pytest.importorskip("rerun")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_browser() is None, reason="Chromium is not installed (make browser, or "
                                 "apt-get install -y chromium)")]

from occnet_ros.viewer.scene import object_color  # noqa: E402
from ros_client import Client  # noqa: E402
from test_viewer_node import NODE_ARGS, free_ports, viewer_args  # noqa: E402


TOP_BAR_PX = 40
"""Height of the viewer's menu bar (its accents are not part of the 3D view)."""


def object_pixels(image: np.ndarray, object_ids=(1, 2)) -> int:
    """Pixels below the menu bar whose hue is within 0.03 of an object's colour, saturated and not dark (the mesh is shaded)."""
    rgb = image[TOP_BAR_PX:].reshape(-1, 3).astype(np.float64) / 255.0
    mx, mn = rgb.max(1), rgb.min(1)
    sat = np.where(mx > 0, (mx - mn) / np.maximum(mx, 1e-9), 0.0)
    hue = np.array([colorsys.rgb_to_hsv(*p)[0] for p in rgb[(sat > 0.35) & (mx > 0.25)]])
    count = 0
    for oid in object_ids:
        h = colorsys.rgb_to_hsv(*(object_color(oid) / 255.0))[0]
        d = np.abs(hue - h)
        count += int(np.sum(np.minimum(d, 1 - d) < 0.03))
    return count


def _page_drawn(image: np.ndarray) -> bool:
    """The viewer's page has drawn its UI: more than 0.2 % of the pixels differ from the most common colour (the
    page's background) by more than 30 in some channel (a blank page: none; the empty viewer, light theme, with
    its toolbar, panel titles and ground grid: 0.5-2.3 %)."""
    px = image.reshape(-1, 3).astype(np.int16)
    colours, counts = np.unique(px, axis=0, return_counts=True)
    return float((np.abs(px - colours[counts.argmax()]).max(axis=1) > 30).mean()) > 0.002


def test_meshes_render_in_headless_chromium(tmp_path):
    from PIL import Image

    domain = random_domain_id()
    scene = render_scene(160, 120)
    web, grpc = free_ports(2)
    viewer_log = tmp_path / "viewer.log"
    with node_process(tmp_path, domain, NODE_ARGS) as node:
        viewer = start_program("viewer_node", viewer_args(web, grpc), domain, viewer_log)
        client = Client(domain)
        try:
            assert wait_until(lambda: "open http" in viewer_log.read_text(), 30), viewer_log.read_text()
            url = f"http://localhost:{web}/?url=rerun%2Bhttp%3A%2F%2Flocalhost%3A{grpc}%2Fproxy"
            with HeadlessChromium(log_path=tmp_path / "chromium.log") as browser:
                # the page is up (its UI drawn: not one flat colour) before any object exists; a cold first start
                # (Chromium's profile, the software renderer's shaders, the viewer's wasm) took over 30 s in a full
                # test run on 2 cores
                empty, drawn = screenshot_until(url, _page_drawn, 120, browser=browser)
                Image.fromarray(empty).save(tmp_path / "empty.png")
                assert drawn, "the viewer page did not draw"
                assert object_pixels(empty) < 50
                assert client.feed_until_objects(scene, 50.0, timeout=60) is not None, node.log_path.read_text()[-2000:]
                shot, seen = screenshot_until(url, lambda im: object_pixels(im) > 1000, 40, browser=browser)
                Image.fromarray(shot).save(tmp_path / "objects.png")
                assert seen, (f"no mesh pixels in the screenshot ({object_pixels(shot)}; {tmp_path / 'objects.png'});"
                              f" viewer log:\n{viewer_log.read_text()[-2000:]}")
        finally:
            client.close()
            stop_program(viewer)
