"""The nearest triangle under each pixel centre of one frame, all people in one depth test.

Two backends with one method, `nearest_triangles`, so render.py does the rest the same way:
- `GlRaster` (default): OpenGL through moderngl in an offscreen EGL context (mesa's llvmpipe on a
  CPU-only machine, the GPU's driver elsewhere). Measured on the 2-core CPU of this project with
  10 anny bodies in a 960x540 frame: ~85 ms of CPU, against ~430 ms for embree ray casting, most of
  which is building the BVH of 270k triangles again every frame (the bodies move).
- `RayRaster`: trimesh's ray casting (embree through embreex), one ray per pixel centre inside the
  region; for machines without EGL, and the reference render.py's tests check GlRaster against.
Both answer only the triangle's index: render.py intersects that triangle with the pixel's ray in
float64, so depth, barycentrics and everything after them are exact whichever backend found it.
"""
from __future__ import annotations

import warnings

import numpy as np

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 pixel bounds, x1 and y1 exclusive


def pixel_rays(focal: float, image_size: tuple[int, int], region: Box) -> np.ndarray:
    """float64[h, w, 3] ray directions (camera frame, z = 1) through the pixel centres of the region.

    Pinhole of the fit (render_draw.project): u = f x / z + W / 2, v = f y / z + H / 2, so the centre
    of pixel (col, row), at (col + 0.5, row + 0.5), looks along ((col + 0.5 - W/2) / f, (row + 0.5 - H/2) / f, 1).
    """
    x0, y0, x1, y1 = region
    w, h = image_size
    xs = (np.arange(x0, x1) + 0.5 - w / 2) / focal
    ys = (np.arange(y0, y1) + 0.5 - h / 2) / focal
    d = np.ones((y1 - y0, x1 - x0, 3))
    d[..., 0] = xs[None, :]
    d[..., 1] = ys[:, None]
    return d


_VERTEX = """#version 330
uniform vec4 k;  // (2f/W, 2f/H, depth scale, depth offset)
in vec3 p;
void main() { gl_Position = vec4(k.x * p.x, -k.y * p.y, k.z * p.z + k.w, p.z); }
"""
# The id is written as a float: clearing an integer colour buffer with glClear is undefined in GL,
# and float32 holds every integer below 2^24 exactly (~600 anny bodies of 27k triangles).
_FRAGMENT = """#version 330
out float id;
void main() { id = float(gl_PrimitiveID + 1); }
"""
_MAX_TRIANGLES = 1 << 24


class GlRaster:
    """Offscreen OpenGL rasteriser, one per process and thread (a GL context belongs to the thread that
    made it); keeps its buffers between frames, so make one and reuse it."""

    def __init__(self):
        import moderngl

        self._gl = moderngl
        self.ctx = moderngl.create_standalone_context(backend="egl")
        self.prog = self.ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        self._size: tuple[int, int] | None = None
        self._fbo = None
        self._faces: np.ndarray | None = None
        self._people = self._nv = 0
        self._vbo = self._ibo = self._vao = None

    def _framebuffer(self, size: tuple[int, int]) -> None:
        if self._size == size:
            return
        if self._fbo is not None:
            self._fbo.release()
        self._fbo = self.ctx.framebuffer([self.ctx.renderbuffer(size, 1, dtype="f4")],
                                         self.ctx.depth_renderbuffer(size))
        self._size = size

    def _geometry(self, faces: np.ndarray, people: int, num_vertices: int) -> None:
        """Index buffer for `people` copies of the mesh (person p's vertices follow person p - 1's, so
        gl_PrimitiveID = p * F + triangle); rebuilt only when the faces or the head count grow."""
        same = self._faces is not None and num_vertices == self._nv and np.array_equal(faces, self._faces)
        if same and people <= self._people:
            return
        for obj in (self._vao, self._vbo, self._ibo):
            if obj is not None:
                obj.release()
        people = max(people, self._people) if same else people
        offsets = (np.arange(people, dtype=np.int64) * num_vertices)[:, None, None]
        self._ibo = self.ctx.buffer((faces[None].astype(np.int64) + offsets).astype(np.uint32).tobytes())
        self._vbo = self.ctx.buffer(reserve=people * num_vertices * 12, dynamic=True)
        self._vao = self.ctx.vertex_array(self.prog, [(self._vbo, "3f", "p")], index_buffer=self._ibo,
                                          index_element_size=4)
        self._faces, self._people, self._nv = faces.copy(), people, num_vertices

    def nearest_triangles(self, vertices: np.ndarray, faces: np.ndarray, focal: float,
                          image_size: tuple[int, int], region: Box) -> np.ndarray:
        """int64[h, w] over the region: p * F + triangle of the surface nearest the camera under each
        pixel centre, -1 where none. vertices: float[P, V, 3] camera frame; faces: int[F, 3]."""
        x0, y0, x1, y1 = region
        p, nv = vertices.shape[:2]
        faces = np.ascontiguousarray(faces, np.int64)
        if p * len(faces) >= _MAX_TRIANGLES:
            raise ValueError(f"{p} people x {len(faces)} triangles is over the {_MAX_TRIANGLES} ids a frame can hold")
        w, h = int(image_size[0]), int(image_size[1])
        z = vertices[..., 2]
        front = z[z > 1e-6]
        if x1 <= x0 or y1 <= y0 or front.size == 0:
            return np.full((max(y1 - y0, 0), max(x1 - x0, 0)), -1, np.int64)
        # Near and far planes just around the people: the 24-bit depth buffer then separates surfaces
        # ~0.1 mm apart at 10 m. Whatever lies nearer than `near` (behind the camera) is clipped.
        near, far = max(0.5 * float(front.min()), 1e-3), 2.0 * float(front.max()) + 1.0
        # This context made current for the draw (and the caller's restored after): another GlRaster made or
        # released on the thread since (a second renderer, a test's) leaves its own current, and drawing then
        # went to that one's buffers.
        with self.ctx:
            self.prog["k"].value = (2 * focal / w, 2 * focal / h, (far + near) / (far - near),
                                    -2 * far * near / (far - near))
            self._framebuffer((w, h))
            self._geometry(faces, p, nv)
            self._vbo.write(np.ascontiguousarray(vertices, np.float32).tobytes())
            self._fbo.use()
            self.ctx.enable(self._gl.DEPTH_TEST)
            # GL's rows count up from the bottom of the image: image rows y0..y1 are GL rows h - y1..h - y0.
            gl_box = (x0, h - y1, x1 - x0, y1 - y0)
            self.ctx.scissor = gl_box  # only the region is rasterised, cleared and read
            self._fbo.clear(0.0, 0.0, 0.0, 0.0, depth=1.0)
            self._vao.render(self._gl.TRIANGLES, vertices=p * len(faces) * 3)
            raw = self._fbo.read(viewport=gl_box, components=1, dtype="f4")
            self.ctx.scissor = None
        ids = np.frombuffer(raw, np.float32).reshape(y1 - y0, x1 - x0)[::-1]
        return ids.astype(np.int64) - 1

    def release(self) -> None:
        self.ctx.release()


class RayRaster:
    """trimesh ray casting: one ray from the camera centre through each pixel centre of the region."""

    def nearest_triangles(self, vertices: np.ndarray, faces: np.ndarray, focal: float,
                          image_size: tuple[int, int], region: Box) -> np.ndarray:
        """Same contract as GlRaster.nearest_triangles."""
        import trimesh

        x0, y0, x1, y1 = region
        if x1 <= x0 or y1 <= y0:
            return np.full((max(y1 - y0, 0), max(x1 - x0, 0)), -1, np.int64)
        p, nv = vertices.shape[:2]
        faces = np.asarray(faces, np.int64)
        every = (faces[None] + (np.arange(p) * nv)[:, None, None]).reshape(-1, 3)
        mesh = trimesh.Trimesh(vertices=np.asarray(vertices, np.float64).reshape(-1, 3), faces=every,
                               process=False)
        dirs = pixel_rays(focal, image_size, region).reshape(-1, 3)
        tri = mesh.ray.intersects_first(np.zeros_like(dirs), dirs)
        return np.asarray(tri, np.int64).reshape(y1 - y0, x1 - x0)

    def release(self) -> None:
        pass


def raster_named(name: str) -> GlRaster | RayRaster:
    """The `[dense] raster` setting's backend: "gl" (GlRaster; an error without EGL), "rays" (RayRaster),
    "auto" (make_raster)."""
    if name == "gl":
        return GlRaster()
    if name == "rays":
        return RayRaster()
    if name == "auto":
        return make_raster()
    raise ValueError(f"unknown dense raster {name!r} (gl, rays or auto)")


def make_raster() -> GlRaster | RayRaster:
    """GlRaster where an EGL context can be made, else RayRaster with a warning (~4x slower here):
    a machine without libEGL (or a GPU node whose driver lacks EGL) still gets its dense output."""
    try:
        return GlRaster()
    except Exception as e:  # noqa: BLE001 (moderngl/glcontext raise plain Exception for a missing EGL)
        warnings.warn(f"dense render: no OpenGL/EGL context ({e}); falling back to ray casting", stacklevel=2)
        return RayRaster()
