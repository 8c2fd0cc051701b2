"""``geopatra label``: MD-sampled labelled datasets, determinism, resume after an interruption."""

from __future__ import annotations

import hashlib
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import molecule
from ase.calculators.emt import EMT

from geopatra.data.dataset import fingerprint_arrays
from geopatra.data.download import sgdml_md5
from geopatra.errors import CheckpointError
from geopatra.labeling.driver import (
    EV_TO_KCAL_MOL,
    MDSettings,
    _parser,
    checkpoint_path,
    label_command,
    label_molecule,
    main,
    settings_from_args,
)
from geopatra.labeling.report import trajectory_report
from geopatra.labeling.resume import CHECKPOINT_KIND

SETTINGS = MDSettings(
    temperature=300.0, timestep=0.5, stride=3, frames=8, equilibration_steps=5, seed=7
)


class FlakyEMT(EMT):
    """EMT that raises KeyboardInterrupt on its ``fail_after + 1``-th single point (a Ctrl-C)."""

    def __init__(self, fail_after: int | None = None) -> None:
        super().__init__()
        self.calls = 0
        self.fail_after = fail_after

    def calculate(self, *args, **kwargs) -> None:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        super().calculate(*args, **kwargs)


@pytest.fixture
def one_openmp_thread(torch_threads):
    """tblite shares torch's OpenMP runtime: with torch at 2 threads on a busy 2-core machine, its
    SCF spin-waits and runs ~30x slower. Run the tblite tests on one thread, then restore."""
    torch_threads(1)


@pytest.fixture
def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


def _label(atoms, output, settings=SETTINGS, calculator=None, **kwargs):
    return label_molecule(
        atoms,
        output,
        settings=settings,
        calculator=calculator or FlakyEMT(),
        theory="EMT (test)",
        name="ethanol",
        source="test",
        progress=False,
        **kwargs,
    )


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_dataset_keys_shapes_units_and_metadata(ethanol, tmp_path):
    path = _label(ethanol, tmp_path / "ethanol.npz")
    with np.load(path) as data:
        R, z, E, F = data["R"], data["z"], data["E"], data["F"]
        assert R.shape == (8, 9, 3) and F.shape == (8, 9, 3) and E.shape == (8,)
        assert R.dtype == E.dtype == F.dtype == np.float64
        assert z.tolist() == ethanol.numbers.tolist()
        assert str(data["r_unit"]) == "Ang" and str(data["e_unit"]) == "kcal/mol"
        assert str(data["name"]) == "ethanol" and str(data["theory"]) == "EMT (test)"
        assert float(data["temperature"]) == 300.0 and float(data["timestep"]) == 0.5
        assert int(data["stride"]) == 3 and int(data["seed"]) == 7
        assert str(data["fingerprint"]) == fingerprint_arrays(R, z, E, F)
        assert str(data["md5"]) == sgdml_md5(data)
    # Labels are the calculator's, converted eV -> kcal/mol; forces are raw (no FixCom projection).
    for frame in (0, 7):
        check = Atoms(numbers=z, positions=R[frame], calculator=EMT())
        np.testing.assert_allclose(
            E[frame], check.get_potential_energy() * EV_TO_KCAL_MOL, rtol=1e-12
        )
        np.testing.assert_allclose(
            F[frame], check.get_forces() * EV_TO_KCAL_MOL, rtol=1e-10, atol=1e-10
        )
    assert not np.allclose(R[0], ethanol.positions)  # the trajectory moved
    assert np.ptp(E) > 0
    assert not checkpoint_path(path).exists()


def test_same_seed_same_file_other_seed_other_data(ethanol, tmp_path):
    first = _label(ethanol, tmp_path / "a.npz")
    second = _label(ethanol, tmp_path / "b.npz")
    assert _sha(first) == _sha(second)
    other = _label(
        ethanol, tmp_path / "c.npz", settings=MDSettings(**{**SETTINGS.__dict__, "seed": 8})
    )
    with np.load(first) as a, np.load(other) as c:
        assert not np.array_equal(a["R"], c["R"])


# Checkpoints every 3 steps; a Ctrl-C in MD step 4 (equilibration) or 19 (after 4 frames).
@pytest.mark.parametrize(("fail_after", "step", "frames"), [(4, 3, 0), (20, 18, 4)])
def test_interrupted_run_resumes_to_the_same_file(ethanol, tmp_path, fail_after, step, frames):
    reference = _label(ethanol, tmp_path / "ref.npz")
    output = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        _label(ethanol, output, calculator=FlakyEMT(fail_after=fail_after), checkpoint_every=1)
    assert not output.exists()  # a partial run never looks like a finished one
    partial = checkpoint_path(output)
    assert partial.exists() and not partial.name.endswith(".npz")
    with np.load(partial) as data:
        assert str(data["kind"]) == CHECKPOINT_KIND
        assert (int(data["step"]), int(data["n_done"])) == (step, frames)
        assert "z" not in data.files  # not readable as a dataset
    resumed = FlakyEMT()
    _label(ethanol, output, calculator=resumed, checkpoint_every=1)
    assert _sha(output) == _sha(reference)
    assert not partial.exists()
    assert resumed.calls == SETTINGS.total_steps - step + 1  # it continued, it did not start over


def test_checkpoint_of_other_settings_is_refused(ethanol, tmp_path):
    output = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        _label(ethanol, output, calculator=FlakyEMT(fail_after=20), checkpoint_every=2)
    changed = MDSettings(**{**SETTINGS.__dict__, "temperature": 400.0})
    with pytest.raises(CheckpointError, match="temperature"):
        _label(ethanol, output, settings=changed, checkpoint_every=2)


def test_existing_output_needs_overwrite(ethanol, tmp_path):
    path = _label(ethanol, tmp_path / "a.npz")
    with pytest.raises(FileExistsError, match="overwrite"):
        _label(ethanol, path)
    _label(ethanol, path, overwrite=True)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="stride"):
        MDSettings(stride=0)
    with pytest.raises(ValueError, match="temperature"):
        MDSettings(temperature=-1.0)


def test_label_command_reads_back_as_the_same_run(tmp_path):
    """label_command builds what `geopatra label` parses into the same settings, start and output."""
    settings = MDSettings(temperature=310.5, timestep=0.25, stride=3, frames=8, equilibration_steps=5,
                          friction=0.02, seed=7)
    command = label_command(settings, tmp_path / "out.npz", xyz=tmp_path / "start.xyz", name="w",
                            calculator="gfn1", options=["--no-progress"])
    assert command[:3] == [sys.executable, "-m", "geopatra.labeling"]
    args = _parser().parse_args(command[3:])
    assert settings_from_args(args) == settings
    assert (args.xyz, args.smiles, args.name, args.calculator, args.no_progress, args.output) == (
        tmp_path / "start.xyz", None, "w", "gfn1", True, tmp_path / "out.npz")
    assert _parser().parse_args(label_command(settings, "o.npz", smiles="O")[3:]).smiles == "O"
    with pytest.raises(ValueError, match="exactly one"):
        label_command(settings, "o.npz")


def test_cli_labels_water_with_gfn2(tmp_path, one_openmp_thread):
    pytest.importorskip("tblite")
    pytest.importorskip("rdkit")
    output = tmp_path / "water.npz"
    argv = [
        "--smiles",
        "O",
        "--name",
        "water",
        "--frames",
        "3",
        "--stride",
        "2",
        "--equilibration-steps",
        "2",
        "--seed",
        "1",
        "--output",
        str(output),
        "--no-progress",
    ]
    assert main(argv) == 0
    with np.load(output) as data:
        assert data["R"].shape == (3, 3, 3) and data["z"].tolist() == [8, 1, 1]
        assert str(data["theory"]).startswith("GFN2-xTB (tblite ")
        assert str(data["smiles"]) == "O"
        # GFN2-xTB water is about -5.07 Ha = -3182 kcal/mol: the eV -> kcal/mol factor is applied.
        assert data["E"].min() > -3300 and data["E"].max() < -3100
        first = data["R"].copy()
    assert main([*argv, "--overwrite"]) == 0
    with np.load(output) as data:
        np.testing.assert_array_equal(data["R"], first)


def test_trajectory_report_flags_broken_bonds_and_close_contacts(ethanol):
    R = np.repeat(ethanol.positions[None], 3, axis=0)
    z = ethanol.numbers
    bond = R[1, 8] - R[1, 0]  # a methyl C-H bond
    R[1, 8] = R[1, 0] + 3.0 * bond  # stretched to 3 x its length: broken
    R[2, 3] = R[2, 0] + [0.3, 0.0, 0.0]  # the hydroxyl H squashed onto a C
    F = np.zeros_like(R)
    F[0, 0], F[0, 1] = 1.0, -1.0
    report = trajectory_report(R, z, np.array([1.0, 2.0, 3.0]), F)
    assert report.frames_with_changed_bonds == 2
    assert report.min_distance == pytest.approx(0.3)
    assert report.max_bond_stretch > 3.0
    assert report.energy_std == pytest.approx(np.std([1.0, 2.0, 3.0]))
    assert report.max_net_force == pytest.approx(0.0, abs=1e-12)
    assert report.force_max == pytest.approx(np.sqrt(3.0))


def test_cli_from_xyz_with_gfn1(tmp_path, one_openmp_thread):
    pytest.importorskip("tblite")
    from ase.io import write

    start = tmp_path / "water.xyz"
    write(start, molecule("H2O"))
    output = tmp_path / "w.npz"
    argv = [
        "--xyz",
        str(start),
        "--calculator",
        "gfn1",
        "--frames",
        "2",
        "--stride",
        "1",
        "--equilibration-steps",
        "0",
        "--output",
        str(output),
        "--no-progress",
    ]
    assert main(argv) == 0
    with np.load(output) as data:
        assert str(data["name"]) == "water" and str(data["source"]) == "xyz:water.xyz"
        assert str(data["theory"]).startswith("GFN1-xTB")
        assert data["E"].shape == (2,)


@pytest.mark.parametrize("module", ["rdkit", "tblite"])
def test_missing_optional_dependency_names_the_extra(monkeypatch, module):
    from geopatra.labeling.calculators import reference_calculator
    from geopatra.labeling.structures import atoms_from_smiles

    for name in (module, f"{module}.Chem", f"{module}.Chem.AllChem", f"{module}.ase"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'pip install "geopatra\[label\]"'):
        atoms_from_smiles("CCO") if module == "rdkit" else reference_calculator("gfn2")


def test_smiles_geometry_is_seeded_and_bad_smiles_is_a_data_error():
    pytest.importorskip("rdkit")
    from geopatra.errors import DataError
    from geopatra.labeling.structures import atoms_from_smiles

    first, second = atoms_from_smiles("CCO", seed=3), atoms_from_smiles("CCO", seed=3)
    assert first.get_chemical_formula() == "C2H6O"
    np.testing.assert_array_equal(first.positions, second.positions)
    with pytest.raises(DataError, match="parsed"):
        atoms_from_smiles("C1CC(")


def test_bundled_dataset_is_consistent():
    from geopatra.data.bundled import bundled_path
    from geopatra.errors import DataError

    try:
        path = bundled_path()
    except DataError:
        pytest.skip("bundled dataset not generated in this checkout")
    with np.load(path) as data:
        R, z, E, F = data["R"], data["z"], data["E"], data["F"]
        assert R.shape[0] >= 2000 and R.shape[1:] == (42, 3) and F.shape == R.shape
        assert str(data["theory"]).startswith("GFN2-xTB") and float(data["temperature"]) == 500.0
        assert int(data["stride"]) >= 5
        assert str(data["fingerprint"]) == fingerprint_arrays(R, z, E, F)
        report = trajectory_report(R[::10], z, E[::10], F[::10])
    assert report.frames_with_changed_bonds == 0 and report.min_distance > 0.7
    assert path.stat().st_size <= 5_000_000


def test_charged_smiles_is_labelled_with_its_charge(tmp_path):
    pytest.importorskip("rdkit")
    pytest.importorskip("tblite")
    from geopatra.labeling.calculators import reference_calculator
    from geopatra.labeling.driver import main
    from geopatra.labeling.structures import atoms_from_smiles

    ammonium = atoms_from_smiles("[NH4+]")
    assert ammonium.info == {"charge": 1, "multiplicity": 1}
    output = tmp_path / "nh4.npz"
    argv = ["--smiles", "[NH4+]", "--output", str(output), "--frames", "2", "--stride", "1",
            "--equilibration-steps", "0", "--no-progress"]
    assert main(argv) == 0
    with np.load(output) as data:
        assert str(data["theory"]).endswith(", charge +1")
        frame = ammonium.copy()
        frame.positions = data["R"][0]
    from ase import units

    energies = {}
    for charge, multiplicity in ((1, 1), (0, 2)):
        frame.calc, _ = reference_calculator("gfn2", charge=charge, multiplicity=multiplicity)
        energies[charge] = frame.get_potential_energy() * units.mol / units.kcal
    with np.load(output) as data:
        assert data["E"][0] == pytest.approx(energies[1], abs=1e-3)
        assert abs(data["E"][0] - energies[0]) > 10.0  # kcal/mol: the neutral radical is another molecule
    with pytest.raises(ValueError, match="multiplicity"):
        reference_calculator("gfn2", multiplicity=0)
