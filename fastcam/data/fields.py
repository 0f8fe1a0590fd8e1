"""Physical fields of a synthetic CAM5-like sample: background, cyclones, rivers.

Rows are latitude ascending from -90 to +90 (CAM5's netCDF order), columns
longitude 0..360 east. Every length is in degrees, never pixels, so a sample
at 192 x 288 has the same class frequencies as one at 768 x 1152.

Smooth random fields are iid Gaussian nodes on a coarse lat-lon lattice,
blended by separable cubic B-spline weights (4-tap gathers and multiply-adds
per axis: cheap, vectorised, periodic in longitude). Features are added on their
own bounding patch only. Labels mark where a feature's own normalised anomaly
(times 1 + ragged noise) exceeds a threshold: weak features go unlabelled and
edges are ragged, like TECA's heuristic labels.

``feature_scale`` widens every cyclone and river by that factor (their lengths,
counts, strengths and the background are unchanged; 1 is the real set's
sizes). It exists for small images: at 64 x 96 a pixel is 1.9 x 3.75 degrees,
so a real-sized river (1.5-3 degrees wide) or cyclone core is a pixel or two,
too thin for DeepLabv3+ (output stride 16) to learn in a few hundred steps.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from fastcam.data.layout import CHANNELS, NUM_CHANNELS

F32 = np.float32
CH = {name: index for index, name in enumerate(CHANNELS)}
LABEL_DTYPE = np.int32  # the dtype conftest and most DeepCAM tooling write; readers cast to int64

# Feature counts per sample (Poisson means) and label thresholds, tuned so the
# class frequencies match layout.CLASS_FREQUENCIES (see tests/test_synth.py).
CYCLONES_PER_SAMPLE = 2.2
RIVERS_PER_SAMPLE = 5.5
CYCLONE_THRESHOLD = 0.25
RIVER_THRESHOLD = 0.35
# Standard deviation of a 2-D cubic B-spline blend of unit-variance iid nodes
# (the 1-D weights' sum of squares is 0.46..0.5; squared for two axes).
_BSPLINE_STD = 0.48


@dataclass(frozen=True)
class Grid:
    height: int
    width: int
    lat: np.ndarray  # (H, 1) degrees north, ascending
    lon: np.ndarray  # (1, W) degrees east in [0, 360)

    @property
    def lat_step(self) -> float:
        return 180.0 / self.height

    @property
    def lon_step(self) -> float:
        return 360.0 / self.width


@functools.lru_cache(maxsize=8)
def make_grid(height: int, width: int) -> Grid:
    lat = (-90.0 + (np.arange(height) + 0.5) * 180.0 / height).astype(F32)[:, None]
    lon = ((np.arange(width) + 0.5) * 360.0 / width).astype(F32)[None, :]
    lat.flags.writeable = lon.flags.writeable = False  # shared by the cache
    return Grid(height, width, lat, lon)


@functools.lru_cache(maxsize=64)
def _bspline_taps(size: int, nodes: int, periodic: bool) -> tuple[np.ndarray, np.ndarray]:
    """(4 x size) indices and weights of the lattice nodes blended into each of
    ``size`` evenly spread points by a cubic B-spline."""
    if periodic:
        t = (np.arange(size) + 0.5) * nodes / size
    else:  # one spare node beyond each end, so every point has 4 neighbours
        t = 1.0 + (np.arange(size) + 0.5) * (nodes - 3) / size
    base = np.floor(t).astype(np.int64)
    u = t - base
    weights = np.stack(((1 - u) ** 3 / 6, (3 * u**3 - 6 * u**2 + 4) / 6,
                        (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6, u**3 / 6)).astype(F32)
    index = base[None, :] - 1 + np.arange(4)[:, None]
    if periodic:
        index %= nodes
    index.flags.writeable = weights.flags.writeable = False  # shared by the cache
    return index, weights


def _resample(values: np.ndarray, taps: tuple[np.ndarray, np.ndarray], axis: int) -> np.ndarray:
    """Blend ``values`` along ``axis`` with 4-tap weights: gathers and
    multiply-adds only. Not BLAS: a GEMM's result can depend on its thread
    count and kernel choice, and the data set must be bit-identical for any
    number of workers (threaded OpenBLAS was also 80x slower on tiny GEMMs
    on a loaded machine)."""
    index, weight = taps
    shape = [1] * values.ndim
    shape[axis] = -1
    out = np.take(values, index[0], axis=axis)
    out *= weight[0].reshape(shape)
    term = np.empty_like(out)
    for k in range(1, 4):
        np.take(values, index[k], axis=axis, out=term)
        term *= weight[k].reshape(shape)
        out += term
    return out


def _lattice_shape(scale_deg: float) -> tuple[int, int]:
    return max(4, round(180.0 / scale_deg) + 3), max(4, round(360.0 / scale_deg))


def smooth_noise(rng: np.random.Generator, grid: Grid, count: int, scales_deg: tuple[float, ...]) -> np.ndarray:
    """(count, H, W) float32 smooth fields of about unit variance: one octave
    per scale (coarsest first, features ~scale degrees wide), summed on the
    finest lattice and blended to pixels once."""
    lattice = None
    for scale in scales_deg:
        rows, cols = _lattice_shape(scale)
        nodes = rng.standard_normal((count, rows, cols), dtype=F32)
        if lattice is not None:
            coarse = _resample(lattice, _bspline_taps(cols, lattice.shape[2], True), axis=2)
            coarse = _resample(coarse, _bspline_taps(rows, lattice.shape[1], False), axis=1)
            nodes += coarse  # a smooth octave keeps its std (~0.48) through the blend below
        lattice = nodes
    assert lattice is not None, "need at least one scale"
    wide = _resample(lattice, _bspline_taps(grid.width, lattice.shape[2], True), axis=2)
    fields = _resample(wide, _bspline_taps(grid.height, lattice.shape[1], False), axis=1)
    fields *= F32(1 / (_BSPLINE_STD * math.sqrt(len(scales_deg))))  # each octave adds ~0.48 std
    return fields


@dataclass
class Fields:
    """The 16 channels (C x H x W) plus the intermediates features modify."""

    channels: np.ndarray
    humidity: np.ndarray  # relative humidity near the surface, 0..1
    topography: np.ndarray  # surface height, m
    ragged: np.ndarray  # ~1 degree noise that roughens label edges

    def __getitem__(self, name: str) -> np.ndarray:
        return self.channels[CH[name]]


def background(grid: Grid, rng: np.random.Generator) -> Fields:
    """Large-scale fields with latitude structure (the channels derived from
    pressure, temperature and humidity are filled in by :func:`finish`)."""
    lat = grid.lat
    cos2 = np.cos(np.radians(lat)) ** 2
    alat = np.abs(lat)
    large = smooth_noise(rng, grid, 8, (40.0, 12.0))
    n_temp, n_pres, n_u, n_v, n_moist, n_topo, n_upper, n_u2 = large
    rain, moist_detail, wind_detail = smooth_noise(rng, grid, 3, (3.0,))
    ragged = smooth_noise(rng, grid, 1, (1.0,))[0]

    topography = np.clip(F32(2500.0) * np.maximum(n_topo - F32(0.9), 0) ** F32(1.3), 0, 5500)
    humidity = np.clip(0.78 + 0.08 * n_moist + 0.05 * moist_detail, 0.3, 0.98)
    fields = Fields(np.empty((NUM_CHANNELS, grid.height, grid.width), F32), humidity, topography, ragged)
    fields["TS"][...] = 248 + 54 * cos2 + 3.5 * n_temp - 0.0065 * topography
    fields["T500"][...] = 240 + 28 * cos2 + 2.5 * n_temp + 1.5 * n_upper
    fields["T200"][...] = 217 + 3.0 * n_upper
    fields["PSL"][...] = (101300 + 800 * np.exp(-(((alat - 30) / 10) ** 2))
                          - 1500 * np.exp(-(((alat - 62) / 10) ** 2))
                          - 300 * np.exp(-((lat / 8) ** 2))
                          + (300 + 1200 * np.sqrt(1 - cos2)) * n_pres)
    fields["U850"][...] = (-5 * np.exp(-((lat / 15) ** 2)) + 11 * np.exp(-(((alat - 45) / 12) ** 2))
                           + 6 * n_u + 2 * wind_detail)
    fields["V850"][...] = 5 * n_v + 2 * n_u2
    fields["UBOT"][...] = 0.65 * fields["U850"] + 1.5 * n_u2
    fields["VBOT"][...] = 0.65 * fields["V850"] - 1.5 * wind_detail
    tmq = fields["TMQ"]
    tmq[...] = (3 + 50 * cos2**2) * np.exp(0.3 * n_moist) + 2.0 * moist_detail
    np.maximum(tmq, 0.3, out=tmq)
    fields["PRECT"][...] = 5e-8 * (tmq / 30) ** 2 * np.maximum(rain + 0.2, 0) ** 2
    return fields


def finish(fields: Fields, rng: np.random.Generator) -> None:
    """Derive the dependent channels, then add pixel-scale noise."""
    white = rng.standard_normal(fields.topography.shape, dtype=F32)
    fields["TREFHT"][...] = fields["TS"] - 1.0 + 0.4 * white
    fields["PS"][...] = fields["PSL"] * np.exp(fields.topography * F32(-1 / 8000))
    kelvin = fields["TREFHT"]
    saturation = 611.2 * np.exp(17.67 * (kelvin - 273.15) / (kelvin - 29.65))  # Bolton (1980), Pa
    fields["QREFHT"][...] = 0.622 * fields.humidity * saturation / fields["PS"]
    fields["Z1000"][...] = 0.083 * (fields["PSL"] - 100000)  # ~8.3 m per hPa near sea level
    fields["Z200"][...] = 11000 + 48 * (fields["T500"] - 240) + 0.08 * (fields["PSL"] - 101325)
    fields["ZBOT"][...] = 0.22 * fields["TS"] + 0.3 * white  # lowest model level, ~60 m
    # Pixel-scale noise: one white field (drawing 16 costs more than the rest),
    # rolled by a different number of columns per channel to decorrelate them.
    for name, amplitude in (("TMQ", 0.4), ("U850", 0.6), ("V850", 0.6), ("UBOT", 0.5),
                            ("VBOT", 0.5), ("PSL", 25.0), ("T500", 0.15), ("T200", 0.15)):
        channel = fields[name]
        channel += amplitude * np.roll(white, 1 + 7 * CH[name], axis=1)
    # Saturate above ~55 kg/m2 so the column never exceeds ~75, like CAM5's TMQ.
    tmq = fields["TMQ"]
    tmq[...] = np.where(tmq > 55, 55 + 20 * np.tanh((tmq - 55) / 20), np.maximum(tmq, 0.1))


def _patch(grid: Grid, lat_lo: float, lat_hi: float, lon_lo: float, lon_hi: float):
    """Row slice, wrapped column indices, and (h, 1) lat / (1, w) unwrapped lon of a box."""
    r0 = min(max(math.floor((lat_lo + 90) / grid.lat_step), 0), grid.height)
    r1 = min(max(math.ceil((lat_hi + 90) / grid.lat_step), r0), grid.height)
    c0 = math.floor(lon_lo / grid.lon_step)
    c1 = min(math.ceil(lon_hi / grid.lon_step), c0 + grid.width)
    columns = np.arange(c0, c1)
    lon = ((columns + 0.5) * grid.lon_step).astype(F32)[None, :]
    return slice(r0, r1), columns % grid.width, grid.lat[r0:r1], lon


def add_cyclone(fields: Fields, grid: Grid, labels: np.ndarray, lat0: float, lon0: float,
                size: float, strength: float) -> None:
    """A warm-core vortex of Gaussian width ``size`` degrees, ``strength`` in 0..1."""
    reach = 3.5 * size
    coslat = math.cos(math.radians(lat0))
    rows, cols, lat, lon = _patch(grid, lat0 - reach, lat0 + reach, lon0 - reach / coslat, lon0 + reach / coslat)
    dy = lat - F32(lat0)
    dx = (lon - F32(lon0)) * F32(coslat)
    r2 = dx**2 + dy**2
    core = np.exp(r2 * F32(-0.5 / size**2))
    # Smooth Rankine-like vortex v = vmax 2x / (1 + x^2), x = r / rm: cyclonic
    # (positive relative vorticity) out to 2 sizes, beyond any labelled pixel;
    # tapered to 0 at the patch edge. Counter-clockwise in the northern
    # hemisphere, clockwise in the southern. spin = v / r.
    rm = 0.5 * size
    vmax = 15 + 35 * strength
    taper = np.clip((F32(reach) - np.sqrt(r2)) / F32(1.5 * size), 0, 1)
    spin = F32(math.copysign(2 * vmax / rm, lat0)) / (1 + r2 * F32(1 / rm**2)) * (taper * taper * (3 - 2 * taper))
    u, v = -spin * dy, spin * dx
    for name, delta in (("PSL", -(1500 + 5000 * strength) * core), ("U850", u), ("V850", v),
                        ("UBOT", 0.8 * u), ("VBOT", 0.8 * v), ("T500", 4 * strength * core),
                        ("T200", 2 * strength * core), ("TMQ", (5 + 25 * strength) * core),
                        ("PRECT", (2e-7 + 1.5e-6 * strength) * core**2)):
        fields[name][rows, cols] += delta
    fields.humidity[rows, cols] = np.minimum(fields.humidity[rows, cols] + 0.15 * core, 0.99)
    anomaly = strength * core * (1 + 0.3 * fields.ragged[rows, cols])
    region = labels[rows, cols]
    region[anomaly > CYCLONE_THRESHOLD] = 1
    labels[rows, cols] = region


def add_river(fields: Fields, grid: Grid, labels: np.ndarray, rng: np.random.Generator,
              feature_scale: float = 1.0) -> None:
    """A long, narrow, curved moisture filament running poleward-eastward,
    ``feature_scale`` times the usual width."""
    hemisphere = rng.choice((-1.0, 1.0))
    lat0, lon0 = hemisphere * rng.uniform(18, 35), rng.uniform(0, 360)
    length, slope, curvature = rng.uniform(30, 70), rng.uniform(0.2, 0.7), rng.uniform(-0.006, 0.006)
    wiggle, wavelength, phase = rng.uniform(0, 1.5), rng.uniform(20, 45), rng.uniform(0, 2 * math.pi)
    width, strength = rng.uniform(1.5, 3.0) * feature_scale, rng.uniform(0.15, 1.0)

    def centre(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        angle = 2 * math.pi * x / wavelength + phase
        lat_c = lat0 + hemisphere * (slope * x + curvature * x**2) + wiggle * np.sin(angle)
        dlat = hemisphere * (slope + 2 * curvature * x) + wiggle * 2 * math.pi / wavelength * np.cos(angle)
        return np.clip(lat_c, -75, 75), dlat

    span, _ = centre(np.linspace(0, length, 64))
    rows, cols, lat, lon = _patch(grid, span.min() - 4 * width, span.max() + 4 * width, lon0, lon0 + length)
    x = lon - F32(lon0)
    lat_c, dlat = centre(x)
    norm = np.sqrt(1 + dlat**2)
    distance = (lat - lat_c) / norm
    fraction = x / F32(length)
    taper = np.clip(np.minimum(fraction, 1 - fraction) / F32(0.15), 0, 1)
    envelope = taper * taper * (3 - 2 * taper)  # smoothstep: no hard ends
    profile = envelope * np.exp(distance**2 * F32(-0.5 / width**2))
    speed = (8 + 14 * strength) * profile
    u, v = speed / norm, speed * dlat / norm
    for name, delta in (("TMQ", (6 + 24 * strength) * profile), ("U850", u), ("V850", v),
                        ("UBOT", 0.6 * u), ("VBOT", 0.6 * v), ("T500", 1.5 * profile),
                        ("PRECT", (3e-8 + 2e-7 * strength) * profile)):
        fields[name][rows, cols] += delta
    fields.humidity[rows, cols] = np.minimum(fields.humidity[rows, cols] + 0.1 * profile, 0.99)
    anomaly = strength * profile * (1 + 0.3 * fields.ragged[rows, cols])
    region = labels[rows, cols]
    region[(anomaly > RIVER_THRESHOLD) & (region == 0)] = 2
    labels[rows, cols] = region


def generate(grid: Grid, rng: np.random.Generator,
             feature_scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """One sample: (C x H x W float32 channels, H x W int32 labels). The random
    draws are the same for any ``feature_scale`` (only sizes change), and
    ``feature_scale=1`` is bit-identical to the real-sized generator."""
    fields = background(grid, rng)
    labels = np.zeros((grid.height, grid.width), LABEL_DTYPE)
    for _ in range(rng.poisson(RIVERS_PER_SAMPLE)):
        add_river(fields, grid, labels, rng, feature_scale)
    for _ in range(rng.poisson(CYCLONES_PER_SAMPLE)):
        # Cyclones form over warm tropical oceans, more often in the north.
        lat0 = (1.0 if rng.random() < 0.6 else -1.0) * rng.uniform(8, 30)
        add_cyclone(fields, grid, labels, lat0, rng.uniform(0, 360),
                    size=rng.uniform(1.2, 2.4) * feature_scale, strength=rng.uniform(0.0, 1.0))
    finish(fields, rng)
    return fields.channels, labels
