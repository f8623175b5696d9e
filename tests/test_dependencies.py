"""The dependency floors of pyproject.toml are true: what is installed meets every one of them."""
import importlib.metadata
import os
import tomllib

from packaging.requirements import Requirement

from conftest import ROOT


def requirements() -> list[Requirement]:
  """The requirements of the package and of its extras that the suite installs (test, tensorboard)."""
  with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
    project = tomllib.load(f)['project']
  extras = project['optional-dependencies']
  return [Requirement(r) for r in project['dependencies'] + extras['test'] + extras['tensorboard']]


def below_floor(installed) -> list[str]:
  """'name version: requirement' for every requirement that `installed` (name -> version, None where
  absent) does not meet."""
  return [f'{r.name} {installed(r.name)}: {r}' for r in requirements()
          if installed(r.name) is None or not r.specifier.contains(installed(r.name), prereleases=True)]


def version(name: str) -> str | None:
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def test_every_installed_dependency_meets_its_floor():
  assert below_floor(version) == []


def test_a_version_below_a_floor_is_named():
  """What the test above would say of a Flax older than the code's API."""
  flax = next(str(r) for r in requirements() if r.name == 'flax')
  assert below_floor(lambda name: '0.10.0' if name == 'flax' else version(name)) == [f'flax 0.10.0: {flax}']
